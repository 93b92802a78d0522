"""Outcome regression: RegressionTask trains and predicts in score units, classical baselines
fit (the cross-validation runner and every experiments/outcome YAML: tests/commands/
test_outcome_command.py)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cogimg.tasks.regression import RegressionTask, build_classical

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "outcome").glob("*.yaml"))
GRID = (24, 24, 16)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def tiny_batch(n=6, shape=(8, 8, 8), features=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(n, 1, *shape, generator=g), "tabular": torch.randn(n, features, generator=g),
            "target": torch.arange(n, dtype=torch.float32) * 3}


def test_task_predicts_in_score_units_and_trains():
    task = RegressionTask(model="resnet10_3d", input_shape=(8, 8, 8), tabular_features=3,
                          warmup_steps=1)
    task.fit_target_scaling(np.array([0.0, 10.0, 20.0]))
    assert float(task.target_mean) == 10.0 and float(task.target_std) == pytest.approx(np.std([0, 10, 20]))
    batch = tiny_batch()
    assert task(batch["image"], batch["tabular"]).shape == (6,)
    loader = DataLoader([batch, batch], batch_size=None)  # two ready-made batches
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    before = [p.detach().clone() for p in task.parameters()]
    trainer.fit(task, loader)
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters()))
    trainer.validate(task, loader, verbose=False)
    assert len(task.subject_rows["val"]) == 12 and "val/pearson_r" in trainer.callback_metrics


def test_task_tabular_only_and_bad_arguments():
    task = RegressionTask(fusion="tabular", tabular_features=3)
    assert task(None, tiny_batch()["tabular"]).shape == (6,)
    with pytest.raises(ValueError, match="fusion='tabular' needs"):
        RegressionTask(fusion="tabular")
    with pytest.raises(ValueError, match="supports 'single'"):
        RegressionTask(fusion="late")


@pytest.mark.parametrize("name", ["soop_svr", "svr", "kernel_ridge", "ridge", "gbm", "ensemble",
                                  "stack"])
def test_classical_baselines_fit_a_signal(name):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5))
    maps = (rng.random((120, 30)) < 0.2).astype(float)
    y = np.clip(4 + 2 * x[:, 0] + 3 * maps[:, 0] + rng.normal(0, 0.5, 120), 0, None)
    fast = {"max_iter": 40, "learning_rate": 0.1} if name in ("gbm", "ensemble", "stack") else {}
    model = build_classical(name, n_tabular=5, seed=0, **fast)
    pred = model.fit(np.c_[x, maps][:90], y[:90]).predict(np.c_[x, maps][90:])
    assert np.corrcoef(pred, y[90:])[0, 1] > 0.6
    with pytest.raises(ValueError, match="unknown classical model"):
        build_classical("lasso")


def test_soop_svr_reproduces_the_demo_pipeline():
    """Columns non-zero in > 10 % of the training rows, standardised, default RBF SVR."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4))
    x[:, 1] = 0
    x[:5, 1] = 1.0   # non-zero in exactly 10 % of the 50 training rows: dropped (demo: > 10 %)
    x[:7, 2] = 0     # column 2: 43 non-zero training rows, kept
    y = x[:, 0] * 3 + rng.normal(size=60)
    model = build_classical("soop_svr").fit(x[:50], y[:50])
    keep = [0, 2, 3]
    scaler = StandardScaler().fit(x[:50, keep])
    hand = SVR(kernel="rbf").fit(scaler.transform(x[:50, keep]), y[:50])
    np.testing.assert_allclose(model.predict(x[50:]), hand.predict(scaler.transform(x[50:, keep])))


def test_gbm_monotonic_constraint_by_feature_name():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 2))
    y = np.exp(0.5 * x[:, 0] - 0.3 * np.abs(x[:, 1])) + rng.poisson(1, 200)
    model = build_classical("gbm", seed=0, feature_names=["log_volume", "age"],
                            monotonic={"log_volume": 1}, max_iter=50).fit(x, y)
    grid = np.c_[np.linspace(-3, 3, 50), np.zeros(50)]
    assert np.all(np.diff(model.predict(grid)) >= 0)
    with pytest.raises(ValueError, match="monotonic"):
        build_classical("gbm", feature_names=["a", "b"], monotonic={"volume": 1})
