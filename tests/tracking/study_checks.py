"""A check shared by the studies' end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from cogimg.tracking import study as study_module


def assert_rerun_runs_nothing(out: Path, study: dict, monkeypatch) -> None:
    """Running ``study`` (resolved) into ``out`` again calls no runner: every arm × seed there
    is finished, so each arm spends 0 s (a runner that is called fails the test)."""
    def refuse(arm, *args):
        raise AssertionError(f"reran {arm['name']}")

    for runner in {a["runner"] for a in study["arms"]}:
        monkeypatch.setitem(study_module.RUNNERS, runner, refuse)
    wall = study_module.run_arms(study, out, out / "data")
    assert wall == dict.fromkeys((a["name"] for a in study["arms"]), 0.0)
