"""The ``leave_site_out`` study runner: options checked with the arm and key named; one run
directory per held-out site written only when every site finished (an interrupted arm leaves
nothing the study counts as finished); the comparison pools the held-out sites' subjects (a
hand-computed balanced-accuracy difference); and ``studies/leave_site_out.yaml``'s tiny preset
end to end through ``cogimg study``, resuming without retraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score

from cogimg.cli import main
from cogimg.tracking import study_leave_site_out as lso
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.study import finished
from cogimg.tracking.study_registry import StudyContext
from cogimg.tracking.study_spec import load_study
from cogimg.tracking.study_stats import comparison_table
from tests.tracking.study_checks import assert_rerun_runs_nothing

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "experiments" / "ad" / "lso_resnet10_t1.yaml")


def arm(name: str = "baseline", **options) -> dict:
    return {"name": name, "config": CONFIG, "overrides": [], "budget_s": None,
            "runner": "leave_site_out", "options": options}


@pytest.mark.parametrize(("options", "key"), [({"variant": "dan"}, "options.variant"),
                                              ({"val_fraction": 1.5}, "options.val_fraction"),
                                              ({"weight": 0.1}, "options.weight")])
def test_bad_options_name_the_arm_and_key(options, key):
    with pytest.raises(ValueError, match=rf"arms \(dann\)\.{key}"):
        lso.read_options(arm("dann", **options))


def cohort(root: Path, n_per_site: int = 8) -> Path:
    """participants.tsv only (the runner's split needs no images): two sites, CN/AD alternating."""
    root.mkdir(parents=True)
    rows = [{"participant_id": f"sub-{s}{i:02d}", "site": f"site-{s}",
             "diagnosis": ("CN", "AD")[i % 2]} for s in (1, 2) for i in range(n_per_site)]
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def rows_of(ids, labels, predicted) -> list[dict]:
    return [{"subject_id": i, "label": y, "prob_CN": float(p == "CN"), "prob_AD": float(p == "AD")}
            for i, y, p in zip(ids, labels, predicted)]


def test_sites_are_written_together_and_only_when_all_finished(tmp_path, monkeypatch):
    data = cohort(tmp_path / "bids")
    context = StudyContext(data=data, cache=tmp_path / "cache", stages=("test",),
                           trainer_overrides=[], out=tmp_path / "out")
    calls = []

    def fake_site(protocol, site, options, ctx, seed):  # no training: the writing logic only
        calls.append(site)
        if site == "site-2" and len(calls) == 2 and fail[0]:
            raise RuntimeError("interrupted")
        task = protocol.exp.task_class(**protocol.exp.task_args)
        return task, {"test": rows_of([f"{site}-a", f"{site}-b"], ["CN", "AD"], ["CN", "CN"])}, 1.0

    monkeypatch.setattr(lso, "run_site", fake_site)
    run_dir = context.out / "runs" / "baseline" / "seed0"
    fail = [True]
    with pytest.raises(RuntimeError, match="interrupted"):
        lso.leave_site_out_runner(arm(), 0, run_dir, context)
    assert calls == ["site-1", "site-2"] and not run_dir.exists()
    assert not finished(run_dir.parent, ("test",))

    fail[0] = False
    lso.leave_site_out_runner(arm(), 0, run_dir, context)
    runs, skipped = find_runs(run_dir, stage="test")
    assert not skipped and sorted(r.manifest["experiment"] for r in runs) == ["held_out_site-1",
                                                                             "held_out_site-2"]
    assert {r.manifest["variant"] for r in runs} == {"baseline"}
    assert all(r.metrics["test"]["test/balanced_accuracy"] == 0.5 for r in runs)
    assert lso.baseline_weights(context, lso.read_options(arm("tent", variant="tent")), 0, "site-2")
    assert lso.baseline_weights(context, lso.read_options(arm("tent", variant="tent")), 1, "site-2") is None
    assert (context.out / "splits").is_dir()  # the split every arm and seed shares


def test_comparison_pools_the_held_out_sites_subjects(tmp_path):
    """variant − baseline balanced accuracy over both held-out sites' subjects, by hand."""
    from cogimg.tasks.classification import ClassificationTask
    from cogimg.tracking.run import write_run

    rng = np.random.default_rng(0)
    task = ClassificationTask(model="resnet10_3d", classes=["CN", "AD"], modalities=["T1w"],
                              input_shape=[16, 16, 16], model_kwargs={"block_inplanes": [4, 4, 4, 4]})
    labels = {site: rng.choice(["CN", "AD"], 10) for site in ("site-1", "site-2")}
    predicted = {}
    for name in ("baseline", "tent"):
        for site, truth in labels.items():
            predicted[name, site] = rng.choice(["CN", "AD"], 10)
            ids = [f"{site}-{i}" for i in range(10)]
            write_run(tmp_path / "runs" / name / "seed0" / site, task, experiment=f"held_out_{site}",
                      variant=name, seed=0, metrics={"test": {}},
                      subjects={"test": rows_of(ids, truth, predicted[name, site])})
    study = {"comparisons": [{"a": "baseline", "b": "tent", "metric": "balanced_accuracy",
                              "stage": "test", "name": None}], "n_boot": 100}
    row = comparison_table(tmp_path, study).iloc[0]
    y = np.concatenate([labels["site-1"], labels["site-2"]])

    def ba(name):
        return balanced_accuracy_score(y, np.concatenate([predicted[name, s] for s in labels]))

    assert row["mean_a"] == pytest.approx(ba("baseline"))
    assert row["mean_b"] == pytest.approx(ba("tent"))
    assert row["n_subjects"] == 20 and row["seeds"] == "0"


@pytest.mark.study
@pytest.mark.slow  # a tiny cohort, two sites, three arms: ~20 s on one idle core
def test_tiny_preset_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    """The shipped tiny preset with three of its arms (baseline, a retrained and a test-time
    variant: the other retrained variants run the same code path) and their comparisons."""
    monkeypatch.setenv("COGIMG_WANDB", "off")
    raw = yaml.safe_load((ROOT / "studies" / "leave_site_out.yaml").read_text(encoding="utf-8"))
    keep = {"baseline", "dann", "tent"}
    raw["arms"] = [a for a in raw["arms"] if a["name"] in keep]
    raw["comparisons"] = [c for c in raw["comparisons"] if c["b"] in keep]
    for entry in raw["arms"]:
        entry["config"] = str(ROOT / entry["config"])
    path = tmp_path / "leave_site_out.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = tmp_path / "lso"
    assert main(["study", str(path), "--out", str(out), "--preset", "tiny",
                 "--accelerator", "cpu", "--workers", "1"]) == 0
    study = load_study(path, "tiny")
    printed = capsys.readouterr().out
    assert "| baseline | dann | balanced_accuracy | test |" in printed
    assert "trained in" in printed and printed.count("site-1 baseline: trained") == 1  # tent reused it
    for name in keep:
        runs, skipped = find_runs(out / "runs" / name / "seed0", stage="test")
        assert not skipped and sorted(r.manifest["experiment"] for r in runs) == [
            "held_out_site-1", "held_out_site-2"]
    in_site, _ = find_runs(out / "runs" / "baseline", stage="val")
    assert len(in_site) == 2
    table = pd.read_csv(out / "comparisons.csv")
    assert list(table["arm_b"]) == ["dann", "tent"] and table["note"].isna().all()
    assert (table["n_subjects"] == 24).all()  # every subject is held out once (two sites)
    assert (out / "figures" / "paired_differences.png").is_file()

    assert_rerun_runs_nothing(out, study, monkeypatch)
