"""The shipped studies run end to end in their ``tiny`` preset (one small synthetic cohort shared
by every tiny preset, the preset's arms, two optimizer steps per deep arm): every arm × seed
leaves a run directory, the comparison table has the study's rows and columns, the declared
figures exist, and a rerun runs nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from cogimg.cli import main
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.study_spec import load_study
from tests.tracking.study_checks import assert_rerun_runs_nothing

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ("fusion_gain", "pd_backbones", "detection_froc", "outcome_soop")
COLUMNS = ["comparison", "arm_a", "arm_b", "metric", "stage", "mean_a", "mean_b", "difference",
           "ci_low", "ci_high", "p_le_0", "n_subjects", "n_entries", "seeds"]


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory) -> Path:
    """The tiny presets' one cohort, synthesised once for every study of this module."""
    from cogimg.data.synth import generate_cohort

    cohorts = [load_study(ROOT / "studies" / f"{name}.yaml", "tiny")["cohort"] for name in STUDIES]
    assert all(c == cohorts[0] for c in cohorts), "the tiny presets must share one cohort"
    cohort = dict(cohorts[0])
    root = tmp_path_factory.mktemp("tiny_cohort") / "data"
    generate_cohort(root, cohort.pop("subjects"), cohort.pop("seed"), workers=1, progress=False,
                    **cohort)
    return root


@pytest.mark.slow  # a tiny cohort shared, two to six tiny arms and a report per study
@pytest.mark.parametrize("name", STUDIES)
def test_tiny_study_runs_end_to_end_and_resumes(name, tiny_cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COGIMG_WANDB", "off")
    out = tmp_path / name
    out.mkdir()
    (out / "data").symlink_to(tiny_cohort, target_is_directory=True)  # the study reuses it
    study = load_study(ROOT / "studies" / f"{name}.yaml", "tiny")
    assert main(["study", str(ROOT / "studies" / f"{name}.yaml"), "--out", str(out),
                 "--preset", "tiny", "--accelerator", "cpu", "--workers", "1"]) == 0
    printed = capsys.readouterr().out

    saved = yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8"))
    assert saved["preset"] == "tiny" and saved["arms"] == study["arms"]
    for arm in study["arms"]:
        runs, skipped = find_runs(out / "runs" / arm["name"] / "seed0")
        assert len(runs) == 1 and not skipped, (name, arm["name"], skipped)
        assert runs[0].manifest["experiment"] == arm["name"]
        if arm["runner"] == "fit":
            assert runs[0].manifest["device"]["accelerator"] == "CPUAccelerator"
        assert all((runs[0].path / f"subjects_{c['stage']}.csv").is_file() for c in study["comparisons"])

    table = pd.read_csv(out / "comparisons.csv")
    assert list(table.columns) == [*COLUMNS, "note"]
    assert len(table) == len(study["comparisons"])
    assert table["note"].isna().all(), table["note"].tolist()
    assert table[["mean_a", "mean_b", "difference", "n_subjects"]].notna().all().all()
    assert (table["difference"] == table["mean_b"] - table["mean_a"]).all()
    assert list(table["metric"]) == [c["metric"] for c in study["comparisons"]]
    assert (table["seeds"].astype(str) == "0").all()
    for c, (_, row) in zip(study["comparisons"], table.iterrows()):
        a = [c["a"]] if isinstance(c["a"], str) else c["a"]
        b = [c["b"]] if isinstance(c["b"], str) else c["b"]
        assert row["arm_a"] in a and row["arm_b"] in b
    assert "| arm a | arm b | metric |" in printed
    for figure in study["figures"]:
        assert (out / "figures" / f"{figure}.png").is_file(), figure
    if "froc" in study["figures"]:  # its numbers: every detection arm on every compared stage
        froc = pd.read_csv(out / "figures" / "froc.csv")
        stages = list(dict.fromkeys(c["stage"] for c in study["comparisons"]))
        assert sorted(zip(froc["stage"], froc["arm"])) == sorted(
            (s, a["name"]) for s in stages for a in study["arms"])
        assert froc["cpm"].between(0, 1).all()
    assert "Comparisons (b − a)" in (out / "report.html").read_text(encoding="utf-8")
    timing = yaml.safe_load((out / "study.json").read_text(encoding="utf-8"))
    assert set(timing["wall_s_per_arm"]) == {a["name"] for a in study["arms"]}
    for arm in study["arms"]:  # each arm's seconds: the sum of its runs' own records
        recorded = json.loads((out / "runs" / arm["name"] / "seed0" / "study_wall.json").read_text(encoding="utf-8"))
        assert timing["wall_s_per_arm"][arm["name"]] == recorded["wall_s"] > 0

    # a rerun finds every arm × seed finished: no runner is called
    assert_rerun_runs_nothing(out, saved, monkeypatch)
