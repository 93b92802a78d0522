"""ConnectomeDataModule: subject-level splits, nilearn connectivity fitted on training only."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from nilearn.connectome import ConnectivityMeasure

from cogimg.data.connectome import ConnectomeDataModule, fit_connectivity, top_k_edges
from cogimg.data.splits import load_split

R, T = 6, 60


def _tree(tmp_path, n_per_class=8, classes=("CN", "MCI", "AD"), seed=0):
    """participants.tsv + a FuncDataset-like object whose AD series couple regions 0 and 1."""
    rng = np.random.default_rng(seed)
    rows, series = [], {}
    for c in classes:
        for i in range(n_per_class):
            pid = f"sub-{c}{i:02d}"
            cov = np.eye(R)
            cov[0, 1] = cov[1, 0] = 0.7 if c == "AD" else 0.0
            series[pid] = rng.multivariate_normal(np.zeros(R), cov, size=T)
            rows.append({"participant_id": pid, "diagnosis": c, "age": 70, "sex": "F",
                         "NIHSS": float(i)})
    pd.DataFrame(rows).to_csv(tmp_path / "participants.tsv", sep="\t", index=False)
    motion = pd.DataFrame({"subject": list(series), "mean_fd_mm": 0.1,
                           "high_motion_fraction": 0.0, "flagged": False, "reason": ""})
    motion.loc[0, ["flagged", "reason"]] = [True, "mean FD 0.9 mm"]
    return SimpleNamespace(subjects=sorted(series), series=series,
                           region_names=[f"r{i}" for i in range(R)], motion=motion)


def test_tangent_fitted_on_training_subjects_only(tmp_path):
    data = _tree(tmp_path)
    dm = ConnectomeDataModule(tmp_path, preset="ad", kind="tangent", n_folds=3,
                              test_fraction=0.25, func_dataset=data)
    dm.setup("fit")
    subsets = {s: set(dm.subjects[s]) for s in ("train", "val", "test")}
    assert not (subsets["train"] & subsets["test"]) and not (subsets["train"] & subsets["val"])
    assert dm.split_path.exists() and load_split(dm.split_path).test == sorted(subsets["test"])
    # The reference equals a measure fitted on the training series alone ...
    reference = ConnectivityMeasure(kind="tangent", vectorize=True, discard_diagonal=True,
                                    standardize="zscore_sample")
    reference.fit([data.series[s] for s in dm.subjects["train"]])
    np.testing.assert_allclose(dm.measure.mean_, reference.mean_, rtol=1e-10)
    # ... and a test subject's vector is transform of its own series.
    test_id = dm.subjects["test"][0]
    np.testing.assert_allclose(dm.features["test"][0], reference.transform([data.series[test_id]])[0],
                               rtol=1e-5, atol=1e-6)
    # Changing the test subjects' series changes nothing fitted.
    mean_before = dm.measure.mean_.copy()
    changed = {s: (v * 3 + 1 if s in subsets["test"] else v) for s, v in data.series.items()}
    dm2 = ConnectomeDataModule(tmp_path, preset="ad", kind="tangent", n_folds=3,
                               test_fraction=0.25,
                               func_dataset=SimpleNamespace(**{**vars(data), "series": changed}))
    dm2.setup("fit")
    np.testing.assert_allclose(dm2.measure.mean_, mean_before, rtol=1e-12)
    np.testing.assert_allclose(dm2.features["train"], dm.features["train"], rtol=1e-6)
    assert dm.flagged == [data.motion.loc[0, "subject"]]


def test_batches_shapes_labels_and_matrix_output(tmp_path):
    data = _tree(tmp_path)
    dm = ConnectomeDataModule(tmp_path, preset="ad", kind="correlation", output="vector",
                              discard_diagonal=False, n_folds=3, batch_size=4, func_dataset=data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["connectome"].shape == (4, R * (R + 1) // 2)
    assert batch["label"].dtype == torch.int64 and len(batch["subject_id"]) == 4
    for sid, y in zip(batch["subject_id"], batch["label"].tolist()):
        assert dm.preset.classes[y] == sid[4:-2]  # the diagnosis encoded in the ID
    assert sum(dm.class_counts().values()) == len(dm.subjects["train"])
    mats = ConnectomeDataModule(tmp_path, preset="ad", kind="correlation", output="matrix",
                                n_folds=3, func_dataset=data)
    mats.setup("fit")
    m = mats.features["train"][0]
    sid = mats.subjects["train"][0]
    # a correlation matrix is the subject's own: nilearn on its series alone gives it
    alone = ConnectivityMeasure(kind="correlation", standardize="zscore_sample")
    np.testing.assert_allclose(m, alone.fit_transform([data.series[sid]])[0], atol=1e-6)
    assert np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T)


def test_regression_target_and_errors(tmp_path):
    data = _tree(tmp_path, classes=("stroke",), n_per_class=12)
    dm = ConnectomeDataModule(tmp_path, preset="stroke", kind="partial correlation", n_folds=3,
                              func_dataset=data)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["target"].dtype == torch.float32 and "label" not in batch
    assert np.allclose(batch["target"].numpy(), [float(s[-2:]) for s in batch["subject_id"]])
    bad = ConnectomeDataModule(tmp_path, preset="stroke", target="MMSE", n_folds=3,
                               func_dataset=data)
    with pytest.raises(ValueError, match=r"participants.tsv: no column 'MMSE'"):
        bad.setup("fit")
    with pytest.raises(ValueError, match="kind="):
        ConnectomeDataModule(tmp_path, kind="covariance")


def test_top_k_edges_and_threshold():
    m = torch.tensor([[1.0, 0.9, 0.1, -0.5], [0.9, 1.0, 0.2, 0.0],
                      [0.1, 0.2, 1.0, 0.3], [-0.5, 0.0, 0.3, 1.0]])
    edges, weight = top_k_edges(m, k=1)
    pairs = {tuple(e) for e in edges.T.tolist()}
    # strongest neighbour: 0→1, 1→0, 2→3, 3→0 (|-0.5|), symmetrised
    assert pairs == {(0, 1), (1, 0), (2, 3), (3, 2), (0, 3), (3, 0)}
    assert torch.allclose(weight, m[edges[0], edges[1]])
    edges, _ = top_k_edges(m, k=None, threshold=0.4)
    assert {tuple(e) for e in edges.T.tolist()} == {(0, 1), (1, 0), (0, 3), (3, 0)}
    with pytest.raises(ValueError, match="square"):
        top_k_edges(torch.zeros(3, 4))


def test_fit_connectivity_rejects_empty():
    with pytest.raises(ValueError, match="no training time series"):
        fit_connectivity([])
