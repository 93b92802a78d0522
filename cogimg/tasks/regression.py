"""Outcome regression (lesion → clinical score), deep and classical, in one place.

* :class:`RegressionTask` — a LightningModule: a 3D CNN on the lesion map (any
  classification backbone of the registry, one output) fused with a tabular MLP (age,
  lesion volume, territory loads) through :func:`cogimg.paradigms.fusion.build_fusion_model`
  (``fusion="single"`` + ``use_tabular``, or ``fusion="tabular"`` for the MLP alone). It
  learns the score standardised with the training set's mean and SD (stored as buffers, so
  checkpoints predict in score units), with a Huber loss robust to the long right tail of
  NIHSS.
* :func:`build_classical` — scikit-learn baselines on tabular features: ``svr`` (RBF SVR,
  C/γ tuned by inner 3-fold CV, as the SOOP demo's), ``ridge`` (α by efficient LOO CV),
  ``gbm`` (histogram gradient boosting, Poisson loss for a count-like score) and
  ``ensemble`` (mean of the three). ``sqrt_target`` fits √score and squares back, since
  NIHSS is skewed.
* :func:`tabular_features` — the ``(N, F)`` feature matrix of an
  :class:`~cogimg.data.outcome.OutcomeCohort`.

Batches: ``image`` ``(B, 1, X, Y, Z)`` float32 lesion fraction, ``tabular`` ``(B, F)``
standardised features, ``target`` ``(B,)`` score, ``subject_id`` list. Validation/test keep one
row per subject (``subject_id``, ``target``, ``pred``) and log ``<stage>/pearson_r``,
``spearman_rho``, ``mae``, ``r2`` (test adds 95 % bootstrap bounds of ``pearson_r``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cogimg.metrics.regression import bootstrap_ci, regression_report
from cogimg.paradigms.fusion import build_fusion_model
from cogimg.tasks.base import BaseTask

#: Feature groups of :func:`tabular_features`.
FEATURE_GROUPS = ("territories", "covariates", "log_volume", "map")
CLASSICAL = ("svr", "ridge", "gbm", "ensemble")


def tabular_features(cohort, groups: Sequence[str] = FEATURE_GROUPS) -> tuple[np.ndarray, list[str]]:
    """``(N, F)`` float64 features and their names, in the order of ``groups``: territory
    loads (fractions), covariates (e.g. age in years), ``log1p(lesion volume in mL)`` and
    ``map`` — the flattened lesion fraction of every block of ``cohort.maps`` (put it last:
    :func:`build_classical` models read the first ``n_tabular`` columns only, except ridge)."""
    if unknown := [g for g in groups if g not in FEATURE_GROUPS]:
        raise ValueError(f"unknown feature group(s) {unknown}; choose from {list(FEATURE_GROUPS)}")
    parts, names = [], []
    for group in groups:
        if group == "territories":
            if not cohort.territory_names:
                raise ValueError("feature group 'territories' needs territory loads: load the "
                                 "cohort with an atlas")
            parts.append(cohort.territory_load)
            names += list(cohort.territory_names)
        elif group == "covariates":
            parts.append(cohort.covariates)
            names += list(cohort.covariate_names)
        elif group == "log_volume":
            parts.append(np.log1p(cohort.lesion_volume_ml)[:, None])
            names.append("log_lesion_volume_ml")
        else:
            parts.append(cohort.lesion_fraction.reshape(len(cohort), -1))
            names += [f"map_{i}" for i in range(parts[-1].shape[1])]
    return np.concatenate(parts, axis=1).astype(np.float64), names


def build_classical(name: str, n_tabular: int | None = None, sqrt_target: bool | None = None,
                    seed: int = 0, **params: Any):
    """A scikit-learn regressor ``fit(X, y)`` / ``predict(X)``.

    Args:
        name: one of :data:`CLASSICAL`.
        n_tabular: how many leading columns of ``X`` are tabular features (the rest are
            lesion-map voxels); ``None`` = all. SVR and boosting read the tabular columns
            (standardised); ridge reads everything (map voxels as fractions, all-zero
            voxels of the training fold dropped), where a voxel-wise linear model is the
            classic lesion-load predictor.
        sqrt_target: learn √y and predict its square (y ≥ 0, e.g. NIHSS); default: on for
            SVR (+0.02 R on SOOP), off for ridge (its map voxels fit y better linearly).
        seed: seed of the inner CV folds and of boosting.
        params: overrides: ``svr``: ``C_grid``, ``gamma_grid``; ``ridge``: ``alphas``;
            ``gbm``: ``HistGradientBoostingRegressor`` arguments.
    """
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingRegressor, VotingRegressor
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    tab = slice(0, n_tabular)
    own = {"C_grid", "gamma_grid", "alphas"}

    def tabular(*steps):
        return make_pipeline(ColumnTransformer([("tabular", StandardScaler(), tab)]), *steps)

    def svr():
        grid = {"svr__C": list(params.get("C_grid", (1.0, 3.0, 10.0, 30.0))),
                "svr__gamma": list(params.get("gamma_grid", ("scale", 0.01, 0.03)))}
        return GridSearchCV(tabular(SVR()), grid, cv=KFold(3, shuffle=True, random_state=seed))

    def ridge():
        alphas = list(params.get("alphas", np.logspace(-1, 5, 25).tolist()))
        parts = [("tabular", StandardScaler(), tab)]
        if n_tabular is not None:
            parts.append(("map", VarianceThreshold(0.0), slice(n_tabular, None)))
        return make_pipeline(ColumnTransformer(parts), RidgeCV(alphas=alphas))

    def gbm():
        settings = {"loss": "poisson", "max_iter": 300, "learning_rate": 0.03,
                    "max_leaf_nodes": 8, "min_samples_leaf": 20, "l2_regularization": 1.0,
                    "random_state": seed}
        settings.update({k: v for k, v in params.items() if k not in own})
        return tabular(HistGradientBoostingRegressor(**settings))

    def sqrt(estimator, default: bool):
        if not (default if sqrt_target is None else sqrt_target):
            return estimator
        return TransformedTargetRegressor(estimator, func=np.sqrt, inverse_func=np.square,
                                          check_inverse=False)

    # Poisson boosting already models a skewed count through its log link: no √ there.
    builders = {"svr": lambda: sqrt(svr(), True), "ridge": lambda: sqrt(ridge(), False),
                "gbm": gbm}
    if name == "ensemble":
        return VotingRegressor([(n, builders[n]()) for n in ("svr", "ridge", "gbm")])
    if name not in builders:
        raise ValueError(f"unknown classical model {name!r}; choose one of {list(CLASSICAL)}")
    return builders[name]()


class RegressionTask(BaseTask):
    """Score regression from a lesion map (+ tabular features) with a registry backbone.

    Args:
        model: classification registry backbone (``resnet10_3d`` …), used with one output.
        input_shape: lesion-map shape ``(X, Y, Z)`` in voxels.
        tabular_features: width ``F`` of ``tabular`` (0 = image only).
        fusion: ``single`` (CNN, + MLP when ``tabular_features``) or ``tabular`` (MLP only).
        target_mean / target_std: standardisation of the score (set from the training
            scores by :meth:`fit_target_scaling` before training).
        huber_delta: Huber loss threshold in standardised units.
        model_kwargs, lr, …: as :class:`~cogimg.tasks.base.BaseTask`.
    """

    def __init__(self, model: str = "resnet10_3d", input_shape: tuple[int, int, int] = (40, 48, 34),
                 tabular_features: int = 0, fusion: str = "single", target_mean: float = 0.0,
                 target_std: float = 1.0, huber_delta: float = 1.0, tabular_hidden: Sequence[int]
                 = (64, 32), model_kwargs: Mapping[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, optimizer: str = "adamw", scheduler: str = "cosine",
                 warmup_steps: int = 20) -> None:
        if fusion not in ("single", "tabular"):
            raise ValueError(f"fusion={fusion!r}; RegressionTask supports 'single' (CNN, + MLP "
                             "with tabular_features) and 'tabular' (MLP only)")
        if fusion == "tabular" and tabular_features < 1:
            raise ValueError("fusion='tabular' needs tabular_features ≥ 1")
        if target_std <= 0:
            raise ValueError(f"target_std must be positive, got {target_std}")
        super().__init__(model, dict(model_kwargs or {}), lr, weight_decay, optimizer, scheduler,
                         warmup_steps)
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))

    def configure_models(self) -> None:
        hp = self.hparams
        self.model = build_fusion_model(
            hp.fusion, backbone=hp.model, modalities=("lesion",), num_classes=1,
            input_shape=hp.input_shape, tabular_features=int(hp.tabular_features),
            backbone_kwargs=hp.model_kwargs, tabular_hidden=tuple(hp.tabular_hidden))

    def fit_target_scaling(self, scores: np.ndarray) -> None:
        """Standardise the target with the training scores' mean and SD."""
        scores = np.asarray(scores, dtype=np.float64)
        self.target_mean.fill_(float(scores.mean()))
        self.target_std.fill_(float(max(scores.std(), 1e-6)))

    def forward(self, image: torch.Tensor | None, tabular: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted scores ``(B,)`` in score units from ``image`` ``(B, 1, X, Y, Z)``."""
        z = self.model(image, None, tabular)[:, 0]
        return z * self.target_std + self.target_mean

    def _standardised(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.model(batch.get("image"), None, batch.get("tabular"))[:, 0]
        target = (batch["target"].float() - self.target_mean) / self.target_std
        return z, target

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        z, target = self._standardised(batch)
        loss = F.huber_loss(z, target, delta=self.hparams.huber_delta)
        self.log("train/loss", loss, prog_bar=True, batch_size=target.shape[0])
        return loss

    def _evaluate(self, batch: dict, stage: str) -> None:
        pred = self(batch.get("image"), batch.get("tabular")).detach().cpu().numpy()
        target = batch["target"].detach().cpu().numpy()
        ids = batch.get("subject_id") or [f"{stage}-{len(self.subject_rows[stage]) + i}"
                                          for i in range(len(target))]
        self.subject_rows[stage] += [{"subject_id": str(i), "target": float(t), "pred": float(p)}
                                     for i, t, p in zip(ids, target, pred)]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``{"subject_id": [...], "pred": (B,) scores}``."""
        return {"subject_id": batch.get("subject_id"),
                "pred": self(batch.get("image"), batch.get("tabular"))}

    def _log_summary(self, stage: str) -> None:
        rows = self.subject_rows[stage]
        if len(rows) < 2:
            return
        target = np.array([r["target"] for r in rows])
        pred = np.array([r["pred"] for r in rows])
        values = {k: v for k, v in regression_report(target, pred).items() if k != "n"}
        if stage == "test":
            low, high = bootstrap_ci(target, pred, "pearson_r", n_boot=1000, seed=0)
            values.update(pearson_r_ci_low=low, pearson_r_ci_high=high)
        for key, value in values.items():
            if np.isfinite(value):
                self.log(f"{stage}/{key}", float(value), prog_bar=key == "pearson_r")

    def on_validation_epoch_end(self) -> None:
        self._log_summary("val")

    def on_test_epoch_end(self) -> None:
        self._log_summary("test")


__all__ = ["CLASSICAL", "FEATURE_GROUPS", "RegressionTask", "build_classical", "tabular_features"]
