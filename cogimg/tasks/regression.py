"""Outcome regression (lesion → clinical score), deep and classical, in one place.

* :class:`RegressionTask` — a LightningModule: a 3D CNN on the lesion map (any
  classification backbone of the registry, one output) fused with a tabular MLP (age,
  lesion volume, territory loads) through :func:`cogimg.paradigms.fusion.build_fusion_model`
  (``fusion="single"`` + ``use_tabular``, or ``fusion="tabular"`` for the MLP alone). It
  learns the score standardised with the training set's mean and SD (stored as buffers, so
  checkpoints predict in score units), with a Huber loss robust to the long right tail of
  NIHSS.
* :func:`~cogimg.tasks.classical.build_classical` — scikit-learn models on tabular features
  (the SOOP demo's SVR reproduced as ``soop_svr``, tuned SVR, kernel ridge, ridge, boosting,
  ensembles); re-exported here.
* :func:`~cogimg.data.outcome_features.tabular_features` — the ``(N, F)`` feature matrix of an
  :class:`~cogimg.data.outcome.OutcomeCohort` from named groups; re-exported here.

Batches: ``image`` ``(B, 1, X, Y, Z)`` float32 lesion fraction, ``tabular`` ``(B, F)``
standardised features, ``target`` ``(B,)`` score, ``subject_id`` list. Validation/test keep one
row per subject (``subject_id``, ``target``, ``pred``) and log ``<stage>/pearson_r``,
``spearman_rho``, ``mae``, ``r2`` (test adds 95 % bootstrap bounds of ``pearson_r``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from cogimg.data.outcome_features import FEATURE_GROUPS, tabular_features
from cogimg.metrics.regression import bootstrap_ci, regression_report
from cogimg.models.connectome import INPUT_KEYS, build_connectome_model, with_num_nodes
from cogimg.models.fusion import build_fusion_model
from cogimg.tasks.addons import TrainingAddon
from cogimg.tasks.base import BaseTask
from cogimg.tasks.classical import CLASSICAL, build_classical
from cogimg.tasks.scoring import RegressionScorer

#: Settings of :func:`fit_predict_cnn` (``model.params`` of a ``cnn`` outcome experiment).
CNN_DEFAULTS = {"backbone": "resnet10_3d", "max_epochs": 30, "batch_size": 16, "lr": 1e-3,
                "weight_decay": 1e-2, "tabular": True, "model_kwargs": {}, "huber_delta": 1.0}


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
        model_kwargs, lr, …, addons: as :class:`~cogimg.tasks.base.BaseTask`.
        input_key: batch entry the network reads: ``image`` or ``connectome`` (as
            :class:`~cogimg.tasks.classification.ClassificationTask`); with a datamodule that
            offers ``train_targets()``, the target scaling is fitted on them at ``fit``.
    """

    kind = "regression"
    default_metric = "pearson_r"
    leaderboard_metrics = ("pearson_r", "spearman_rho", "mae", "r2")
    metric_labels: ClassVar[dict[str, str]] = {"pearson_r": "Pearson r", "spearman_rho": "Spearman ρ", "mae": "MAE",
                     "r2": "R²"}
    subject_scorer = RegressionScorer

    def __init__(self, model: str = "resnet10_3d", input_shape: tuple[int, int, int] = (40, 48, 34),
                 tabular_features: int = 0, fusion: str = "single", target_mean: float = 0.0,
                 target_std: float = 1.0, huber_delta: float = 1.0, tabular_hidden: Sequence[int]
                 = (64, 32), model_kwargs: Mapping[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, optimizer: str = "adamw", scheduler: str = "cosine",
                 warmup_steps: int = 20, addons: list[TrainingAddon] | None = None,
                 input_key: str = "image") -> None:
        if input_key not in INPUT_KEYS:
            raise ValueError(f"input_key={input_key!r}; choose one of {list(INPUT_KEYS)}")
        if fusion not in ("single", "tabular"):
            raise ValueError(f"fusion={fusion!r}; RegressionTask supports 'single' (CNN, + MLP "
                             "with tabular_features) and 'tabular' (MLP only)")
        if fusion == "tabular" and tabular_features < 1:
            raise ValueError("fusion='tabular' needs tabular_features ≥ 1")
        if target_std <= 0:
            raise ValueError(f"target_std must be positive, got {target_std}")
        super().__init__(model, dict(model_kwargs or {}), lr, weight_decay, optimizer, scheduler,
                         warmup_steps, addons)
        self.register_buffer("target_mean", torch.tensor(float(target_mean)))
        self.register_buffer("target_std", torch.tensor(float(target_std)))

    def configure_models(self) -> None:
        hp = self.hparams
        if hp.input_key != "image":
            self.model = None  # built in configure_model() when the regions are not given
            if "num_nodes" in hp.model_kwargs:
                self.model = build_connectome_model(hp.model, num_outputs=1,
                                                    model_kwargs=hp.model_kwargs)
            return
        self.model = build_fusion_model(
            hp.fusion, backbone=hp.model, modalities=("lesion",), num_classes=1,
            input_shape=hp.input_shape, tabular_features=int(hp.tabular_features),
            backbone_kwargs=hp.model_kwargs, tabular_hidden=tuple(hp.tabular_hidden))

    def configure_model(self) -> None:
        if self.model is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            self.hparams.model_kwargs = with_num_nodes(self.hparams.model_kwargs, datamodule)
            self.model = build_connectome_model(self.hparams.model, num_outputs=1,
                                                model_kwargs=self.hparams.model_kwargs)
        super().configure_model()

    def setup_task(self, stage: str, datamodule) -> None:
        if stage == "fit" and hasattr(datamodule, "train_targets"):
            self.fit_target_scaling(datamodule.train_targets())

    def fit_target_scaling(self, scores: np.ndarray) -> None:
        """Standardise the target with the training scores' mean and SD."""
        scores = np.asarray(scores, dtype=np.float64)
        self.target_mean.fill_(float(scores.mean()))
        self.target_std.fill_(float(max(scores.std(), 1e-6)))

    def forward(self, image: torch.Tensor | None, tabular: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted scores ``(B,)`` in score units from ``image`` ``(B, 1, X, Y, Z)``."""
        z = self.model(image, None, tabular)[:, 0]
        return z * self.target_std + self.target_mean

    def logits(self, batch: dict, model=None) -> torch.Tensor:
        """Standardised predicted scores ``(B,)`` of ``model`` (default: the task's network)."""
        return (model or self.model)(self.model_input(batch), None, batch.get("tabular"))[:, 0]

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """Huber loss against the standardised ``batch["target"]`` ``(B,)``."""
        target = (batch["target"].float() - self.target_mean) / self.target_std
        return F.huber_loss(output, target, delta=self.hparams.huber_delta)

    def evaluate_batch(self, batch: dict, stage: str) -> list[dict]:
        pred = self(self.model_input(batch), batch.get("tabular")).detach().cpu().numpy()
        target = batch["target"].detach().cpu().numpy()
        ids = batch.get("subject_id") or [f"{stage}-{len(self.subject_rows[stage]) + i}"
                                          for i in range(len(target))]
        return [{"subject_id": str(i), "target": float(t), "pred": float(p)}
                for i, t, p in zip(ids, target, pred)]

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``{"subject_id": [...], "pred": (B,) scores}``."""
        return {"subject_id": batch.get("subject_id"),
                "pred": self(self.model_input(batch), batch.get("tabular"))}

    def summarise(self, rows: list[dict], stage: str) -> dict[str, float]:
        if len(rows) < 2:
            return {}
        target = np.array([r["target"] for r in rows])
        pred = np.array([r["pred"] for r in rows])
        values = {k: v for k, v in regression_report(target, pred).items() if k != "n"}
        if stage == "test":
            low, high = bootstrap_ci(target, pred, "pearson_r", n_boot=1000, seed=0)
            values.update(pearson_r_ci_low=low, pearson_r_ci_high=high)
        return values


def fit_predict_cnn(train, val, groups: Sequence[str], params: Mapping[str, Any],
                    seed: int = 0) -> np.ndarray:
    """Train a :class:`RegressionTask` on the ``train`` cohort (lesion fraction maps + the
    standardised tabular ``groups``); ``(N_val,)`` predicted scores of ``val``. ``params``
    override :data:`CNN_DEFAULTS`."""
    import lightning.pytorch as pl

    if unknown := sorted(set(params) - set(CNN_DEFAULTS)):
        raise ValueError(f"model.params: unknown CNN key(s) {unknown}; allowed: "
                         f"{sorted(CNN_DEFAULTS)}")
    p = {**CNN_DEFAULTS, **params}
    pl.seed_everything(seed, workers=True, verbose=False)
    tab_train = tab_val = None
    if p["tabular"] and groups:
        tab_train, _ = tabular_features(train, groups)
        tab_val, _ = tabular_features(val, groups)
        mean, std = tab_train.mean(0), tab_train.std(0) + 1e-6
        tab_train, tab_val = (tab_train - mean) / std, (tab_val - mean) / std
    task = RegressionTask(
        model=p["backbone"], input_shape=tuple(train.maps.shape[1:]),
        tabular_features=0 if tab_train is None else tab_train.shape[1],
        model_kwargs=p["model_kwargs"], lr=p["lr"], weight_decay=p["weight_decay"],
        huber_delta=p["huber_delta"])
    task.fit_target_scaling(train.scores)
    loader = _loader(train, tab_train, int(p["batch_size"]), shuffle=True, seed=seed)
    trainer = pl.Trainer(max_epochs=int(p["max_epochs"]), accelerator="auto", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, deterministic=False)
    trainer.fit(task, loader)
    task.eval()
    preds = []
    with torch.no_grad():
        for batch in _loader(val, tab_val, 32, shuffle=False, seed=seed):
            preds.append(task(batch["image"], batch.get("tabular")).numpy())
    return np.concatenate(preds)


def _loader(cohort, tabular, batch_size: int, shuffle: bool, seed: int):
    from torch.utils.data import DataLoader, StackDataset, TensorDataset

    parts = {"image": TensorDataset(torch.from_numpy(cohort.lesion_fraction[:, None])),
             "target": TensorDataset(torch.as_tensor(cohort.scores, dtype=torch.float32))}
    if tabular is not None:
        parts["tabular"] = TensorDataset(torch.as_tensor(tabular, dtype=torch.float32))
    dataset = StackDataset(**parts)

    def collate(items):
        return {k: torch.stack([item[k][0] for item in items]) for k in items[0]}

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


__all__ = ["CLASSICAL", "CNN_DEFAULTS", "FEATURE_GROUPS", "RegressionTask", "build_classical",
           "fit_predict_cnn", "tabular_features"]
