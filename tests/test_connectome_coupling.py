"""Per-region structure–function coupling as features: the datamodule's vectors against a
by-hand computation from the T1w images and time series, its errors, and the coupling
baseline YAMLs through the outcome path (``coupling_logistic`` on the leaderboard)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from cogimg.cli import main
from cogimg.data.connectome import ConnectomeDataModule
from cogimg.data.func.bold import ATLAS_DIR, ATLAS_IMAGE, ATLAS_TABLE
from cogimg.paradigms.outcome import load_config
from cogimg.tracking.leaderboard import find_runs, leaderboard
from tests.classification_tree import AFFINE, SHAPE, build_classification_tree

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "connectome"
R, T = 6, 40


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """CN / MCI / AD / PD T1w volumes (4 each), a 6-parcel atlas on the T1w grid beside the
    data (x halves × y thirds) and each subject's random (T, R) series."""
    root = build_classification_tree(tmp_path_factory.mktemp("coupling"), n_per_class=4,
                                     diagnoses=("CN", "MCI", "AD", "PD"))
    x, y, _ = np.indices(SHAPE)
    labels = (1 + (x >= SHAPE[0] // 2) * 3 + np.minimum(y * 3 // SHAPE[1], 2)).astype(np.int16)
    folder = root / ATLAS_DIR
    folder.mkdir(parents=True)
    nib.save(nib.Nifti1Image(labels, AFFINE), str(folder / ATLAS_IMAGE))
    pd.DataFrame({"index": range(1, R + 1), "name": [f"r{i}" for i in range(R)],
                  "network": "n/a"}).to_csv(folder / ATLAS_TABLE, sep="\t", index=False)
    rng = np.random.default_rng(0)
    ids = sorted(p.name for p in root.glob("sub-*"))
    dataset = SimpleNamespace(subjects=ids, series={s: rng.normal(size=(T, R)) for s in ids},
                              motion=None, region_names=[f"r{i}" for i in range(R)])
    return root, labels, dataset


def _by_hand(root: Path, labels: np.ndarray, sid: str, series: np.ndarray) -> np.ndarray:
    t1 = np.asarray(nib.load(root / sid / "anat" / f"{sid}_T1w.nii.gz").dataobj, dtype=float)
    mean = np.array([t1[labels == k].mean() for k in range(1, R + 1)])
    z = (mean - mean.mean()) / mean.std()
    structural = -np.abs(z[:, None] - z[None])
    fc = np.corrcoef(series.T)
    out = np.zeros(R)
    for i in range(R):
        others = [j for j in range(R) if j != i]
        out[i] = np.corrcoef(structural[i, others], fc[i, others])[0, 1]
    return out


def test_coupling_features_match_a_hand_computation(cohort, tmp_path):
    root, labels, dataset = cohort
    dm = ConnectomeDataModule(root, preset="pd", features="coupling", cache_dir=tmp_path,
                              n_folds=2, test_fraction=0.25, func_dataset=dataset)
    dm.setup("fit")
    assert dm.measure is None and dm.measure_shape == (R,)
    for subset in ("train", "test"):
        assert dm.features[subset].shape == (len(dm.subjects[subset]), R)
        for sid, row in zip(dm.subjects[subset], dm.features[subset]):
            np.testing.assert_allclose(row, _by_hand(root, labels, sid, dataset.series[sid]),
                                       atol=1e-5)
    batch = next(iter(dm.test_dataloader()))
    assert batch["connectome"].shape == (len(dm.subjects["test"]), R)


def test_coupling_errors_name_the_subject_and_the_choice(cohort, tmp_path):
    root, _, dataset = cohort
    t1 = root / "sub-001" / "anat" / "sub-001_T1w.nii.gz"
    moved = tmp_path / "moved.nii.gz"
    t1.rename(moved)
    try:
        dm = ConnectomeDataModule(root, preset="pd", features="coupling", cache_dir=tmp_path,
                                  n_folds=2, func_dataset=dataset)
        with pytest.raises(ValueError, match="one T1w image .* for sub-001, found 0"):
            dm.setup("fit")
    finally:
        moved.rename(t1)
    with pytest.raises(ValueError, match="features='edges'"):
        ConnectomeDataModule(root, features="edges")


def test_coupling_yaml_runs_and_lands_on_the_leaderboard(cohort, tmp_path, monkeypatch):
    """PD through ``cogimg fit``; the AD YAML (same model, 3 classes) is schema-checked."""
    root, _, dataset = cohort
    preset = "pd"
    ad = load_config(CONFIGS / "ad_coupling_logistic.yaml")
    assert ad["data"]["features"] == "coupling" and ad["data"]["preset"] == "ad"
    monkeypatch.setattr(ConnectomeDataModule, "_load_func", lambda self: dataset)
    spec = yaml.safe_load((CONFIGS / f"{preset}_coupling_logistic.yaml").read_text("utf-8"))
    assert spec["data"]["features"] == "coupling"
    spec["data"].update(root=str(root), cache_dir=str(tmp_path / "cache"), test_fraction=0.25)
    spec.update(cv={**spec["cv"], "n_folds": 2}, bootstrap=20)
    copy = tmp_path / f"{preset}_coupling_logistic.yaml"
    copy.write_text(yaml.safe_dump(spec), encoding="utf-8")
    run_dir = tmp_path / "runs" / copy.stem
    assert main(["fit", "--config", str(copy), "--out", str(run_dir)]) == 0
    test = pd.read_csv(run_dir / "subjects_test.csv")
    assert len(test) >= 2 and {"prob_CN"} <= set(test.columns)
    board = leaderboard(find_runs(tmp_path / "runs", stage="test")[0], n_boot=20)
    assert board["model"].tolist() == ["coupling_logistic"]
