"""BrainAgeTask: chronological age (years) regressed from a T1-weighted volume.

Brain age is a standard biomarker of neurodegeneration: the gap between the age a network
predicts from a scan and the subject's age grows with atrophy (AD, PD). The synthetic cohort
draws each subject's age and ages its anatomy accordingly (:mod:`cogimg.data.synth.atrophy`),
so the target is known exactly.

Batches (from :class:`~cogimg.data.datamodules.VolumeDataModule` with ``tabular: [age]``):
``image`` ``(B, C, X, Y, Z)``, ``tabular`` ``(B, 2)`` = the age standardised with the training
subjects' mean and SD, and its missingness indicator; ``subject_id``. The network (any
classification backbone of the registry, one output) never sees the age: it is the target.
The task learns the standardised age with a Huber loss and reports years; subjects without an
age are left out of the loss and the metrics. Validation/test rows: ``subject_id``,
``target`` and ``pred`` (years); logged: ``mae`` (years, the primary metric, lower is better),
``pearson_r``, ``spearman_rho``, ``r2``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from cogimg import models
from cogimg.metrics.regression import regression_report
from cogimg.tasks.base import BaseTask
from cogimg.tasks.scoring import RegressionScorer


class BrainAgeTask(BaseTask):
    """Age regression from whole volumes with a registry backbone.

    Args:
        model: classification registry backbone (``resnet10_3d`` …), built with one output.
        in_channels: image channels (the datamodule's modalities; linked by the CLI).
        input_shape: volume shape ``(X, Y, Z)`` in voxels (the datamodule's ``target_shape``).
        age_mean / age_std: the training subjects' age mean and SD in years (filled in from the
            datamodule when fitting starts; saved, so checkpoints predict in years).
        huber_delta: Huber loss threshold in standardised units.
        model_kwargs, lr, …, addons: as :class:`~cogimg.tasks.base.BaseTask`.
    """

    kind = "brain_age"
    default_metric = "mae"
    default_mode = "min"
    leaderboard_metrics = ("mae", "pearson_r", "r2")
    metric_labels: ClassVar[dict[str, str]] = {"mae": "MAE (years)", "pearson_r": "Pearson r",
                                               "r2": "R²"}
    subject_scorer = RegressionScorer

    def __init__(self, model: str = "resnet10_3d", in_channels: int = 1,
                 input_shape: tuple[int, int, int] = (48, 56, 48), age_mean: float = 0.0,
                 age_std: float = 1.0, huber_delta: float = 1.0,
                 model_kwargs: dict[str, Any] | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, optimizer: str = "adamw", scheduler: str = "cosine",
                 warmup_steps: int = 20, addons: list | None = None) -> None:
        if age_std <= 0:
            raise ValueError(f"age_std must be positive, got {age_std}")
        self.in_channels, self.input_shape = in_channels, tuple(int(s) for s in input_shape)
        super().__init__(model, model_kwargs, lr, weight_decay, optimizer, scheduler, warmup_steps,
                         addons)
        self.register_buffer("age_mean", torch.tensor(float(age_mean)))
        self.register_buffer("age_std", torch.tensor(float(age_std)))

    def configure_models(self) -> None:
        self.model = models.get(self.hparams.model, in_channels=self.in_channels, num_classes=1,
                                input_shape=self.input_shape, **(self.hparams.model_kwargs or {}))

    def setup_task(self, stage: str, datamodule) -> None:
        if datamodule is None or stage != "fit":
            return
        features = list(getattr(datamodule, "tabular_features", []))
        if features[:2] != ["age", "age_missing"]:
            raise ValueError("BrainAgeTask reads the age from the datamodule's tabular features: "
                             f"set data.init_args.tabular: [age] (got features {features})")
        ages = np.array([float(s["age"]) for s in datamodule.subjects["train"]
                         if str(s["age"]).strip() not in ("", "n/a", "nan")])
        if ages.size < 2:
            raise ValueError("BrainAgeTask needs at least two training subjects with an age")
        # The datamodule standardises with the same statistics (scikit-learn StandardScaler).
        self.age_mean.fill_(float(ages.mean()))
        self.age_std.fill_(float(max(ages.std(), 1e-6)))
        self.hparams.age_mean, self.hparams.age_std = float(ages.mean()), float(ages.std())

    # -- the protocol --------------------------------------------------------------------
    def logits(self, batch: dict, model=None) -> torch.Tensor:
        """Standardised predicted ages ``(B,)``."""
        return (model or self.model)(batch["image"])[:, 0]

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """Huber loss against the standardised age, over subjects that have one."""
        known = batch["tabular"][:, 1] < 0.5
        if not known.any():
            return output.sum() * 0.0
        return F.huber_loss(output[known], batch["tabular"][known, 0],
                            delta=self.hparams.huber_delta)

    def years(self, standardised: torch.Tensor) -> torch.Tensor:
        return standardised * self.age_std + self.age_mean

    def infer(self, batch: dict) -> torch.Tensor:
        return self.years(self.logits(batch))

    def predict_case(self, image: torch.Tensor, spacing_mm=None) -> dict[str, Any]:
        return {"values": {"brain_age_years": float(self.years(self.model(image)[0, 0]))}}

    def evaluate_batch(self, batch: dict, stage: str) -> list[dict[str, Any]]:
        pred = self.years(self.logits(batch)).detach().cpu().numpy()
        age = self.years(batch["tabular"][:, 0]).cpu().numpy()
        known = (batch["tabular"][:, 1] < 0.5).cpu().numpy()
        return [{"subject_id": str(i), "target": float(t), "pred": float(p)}
                for i, t, p, k in zip(batch["subject_id"], age, pred, known) if k]

    def summarise(self, rows: list[dict[str, Any]], stage: str) -> dict[str, float]:
        if len(rows) < 2:
            return {}
        report = regression_report([r["target"] for r in rows], [r["pred"] for r in rows])
        return {k: v for k, v in report.items() if k != "n"}
