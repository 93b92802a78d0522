"""The ``federated`` study runner: options checked with the arm and key named; per-site splits
(each site's own subjects, stratified, the preset's diagnoses only, the pooled split their
union, the same files for every arm); the recorded metric against scikit-learn; and
``studies/federated.yaml``'s tiny preset end to end through ``cogimg study`` with a Flower
simulation, resuming without retraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import balanced_accuracy_score

from cogimg.cli import main
from cogimg.data.splits import load_split
from cogimg.tracking import study_federated as fed
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.provenance import file_sha256
from cogimg.tracking.study_spec import load_study
from tests.tracking.study_checks import assert_rerun_runs_nothing

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("options", "match"), [
    ({"mode": "hub"}, r"arms \(x\)\.options\.mode: 'hub'"),
    ({"mode": "local"}, r"arms \(x\)\.options\.site"),
    ({"mode": "federated", "strategy": "fedsgd"}, r"arms \(x\)\.options\.strategy: 'fedsgd'"),
    ({"mode": "federated", "strategy": "fedavg", "rounds": 3}, r"arms \(x\)\.options\.rounds"),
    ({"mode": "federated", "strategy": "fedavg", "local_epochs": 0}, r"local_epochs"),
])
def test_bad_options_name_the_arm_and_key(options, match):
    with pytest.raises(ValueError, match=match):
        fed.read_options({"name": "x", "config": "e.yaml", "options": options})


def test_site_splits_hold_each_sites_own_subjects(tmp_path):
    rows = [{"participant_id": f"sub-{s}{d}{i}", "site": f"site-{s}", "diagnosis": d}
            for s in (1, 2, 3) for d in ("CN", "AD", "MCI") for i in range(8)]
    pd.DataFrame(rows).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    args = {"preset": "ad_binary", "test_fraction": 0.25, "n_folds": 4}
    paths = fed.write_site_splits(tmp_path, args, 0, tmp_path / "a")
    assert sorted(paths) == ["pooled", "site-1", "site-2", "site-3"]
    pooled = load_split(paths["pooled"]).fold(0)
    site_of = {r["participant_id"]: r["site"] for r in rows}
    for site in ("site-1", "site-2", "site-3"):
        fold = load_split(paths[site]).fold(0)
        ids = [i for part in ("train", "val", "test") for i in fold[part]]
        assert len(ids) == len(set(ids)) == 16  # CN + AD of this site, each once (no MCI)
        assert {site_of[i] for i in ids} == {site}
        assert sorted("CN" in i for i in fold["test"]) == [False, False, True, True]  # 2 CN, 2 AD
        for part in ("train", "val", "test"):
            assert set(fold[part]) <= set(pooled[part])
    assert sum(len(v) for v in pooled.values()) == 48
    again = fed.write_site_splits(tmp_path, args, 0, tmp_path / "b")
    assert all(file_sha256(paths[k]) == file_sha256(again[k]) for k in paths)


def test_recorded_metric_is_balanced_accuracy_of_the_rows():
    from cogimg.tasks.classification import ClassificationTask

    task = ClassificationTask(model="resnet10_3d", classes=["CN", "AD"], modalities=["T1w"],
                              input_shape=[16, 16, 16], model_kwargs={"block_inplanes": [4, 4, 4, 4]})
    rng = np.random.default_rng(1)
    labels, prob_ad = rng.choice(["CN", "AD"], 30), rng.uniform(size=30)
    rows = [{"subject_id": f"s{i}", "label": y, "prob_CN": 1 - p, "prob_AD": p, "site": "site-1"}
            for i, (y, p) in enumerate(zip(labels, prob_ad))]
    want = balanced_accuracy_score(labels, np.where(prob_ad > 0.5, "AD", "CN"))
    assert fed.subject_metric(task, rows, "test") == {"test/balanced_accuracy": pytest.approx(want)}


def trimmed_study(tmp_path: Path, keep: set[str]) -> Path:
    """The shipped study with only the arms ``keep`` (and the comparisons among them)."""
    raw = yaml.safe_load((ROOT / "studies" / "federated.yaml").read_text(encoding="utf-8"))
    raw["arms"] = [a for a in raw["arms"] if a["name"] in keep]
    for entry in raw["arms"]:
        entry["config"] = str(ROOT / entry["config"])
    comparisons = []
    for c in raw["comparisons"]:
        sides = {k: [n for n in ([c[k]] if isinstance(c[k], str) else c[k]) if n in keep]
                 for k in ("a", "b")}
        if all(sides.values()):
            comparisons.append({**c, **sides})
    raw["comparisons"] = comparisons
    path = tmp_path / "federated.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.study
@pytest.mark.slow  # a tiny cohort, two fits and one 2-round Flower (Ray) simulation
def test_tiny_preset_end_to_end_and_resume(tmp_path, monkeypatch, capsys):
    """The shipped tiny preset with a centralised, a local and the FedAvg arm (FedProx and
    FedBN run the same code path with another strategy) and the comparisons among them."""
    monkeypatch.setenv("COGIMG_WANDB", "off")
    keep = {"centralised", "local_site-1", "fedavg"}
    path = trimmed_study(tmp_path, keep)
    out = tmp_path / "fed"
    assert main(["study", str(path), "--out", str(out), "--preset", "tiny",
                 "--accelerator", "cpu", "--workers", "1"]) == 0
    study = load_study(path, "tiny")
    printed = capsys.readouterr().out
    assert "| centralised | fedavg | balanced_accuracy | test |" in printed

    test_ids = None
    for name in keep:
        runs, skipped = find_runs(out / "runs" / name / "seed0", stage="test")
        assert len(runs) == 1 and not skipped
        run = runs[0]
        assert run.manifest["experiment"] == name and run.manifest["federated"]["epochs"] == 2
        ids = set(run.subjects["subject_id"])
        assert test_ids is None or ids == test_ids  # every arm scores the same subjects
        test_ids = ids
        assert set(run.subjects["site"]) == {"site-1", "site-2", "site-3"}
        assert (run.path / "subjects_val.csv").is_file()
    curve = pd.read_csv(out / "runs" / "fedavg" / "seed0" / "metrics.csv")
    assert list(curve["epoch"]) == [0, 1] and "val/balanced_accuracy" in curve
    assert sorted(p.name for p in (out / "runs" / "fedavg" / "seed0" / "flower" / "clients").iterdir()) == [
        "site-1.pt", "site-2.pt", "site-3.pt"]
    table = pd.read_csv(out / "comparisons.csv")
    assert len(table) == len(study["comparisons"]) == 3 and table["note"].isna().all()
    assert (table["n_subjects"] == len(test_ids)).all()

    assert_rerun_runs_nothing(out, study, monkeypatch)
