"""What every cogimg task shares (TorchGeo's ``BaseTask`` pattern).

A task is a LightningModule that fills four hooks — ``configure_models``,
``configure_losses``, ``configure_metrics`` and the step methods — while this base owns the
hyperparameters, the optimizer and scheduler from config, and the per-subject rows that
validation and test collect (one dict per subject, written to CSV by the run tracker).
"""

from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any

import torch
from lightning.pytorch import LightningModule

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
SCHEDULERS = ("cosine", "constant")


class BaseTask(LightningModule):
    """Base LightningModule of all cogimg tasks.

    Args:
        model: registry name (``cogimg.models.available()``).
        model_kwargs: extra keyword arguments for the model builder.
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW) or L2 (others).
        optimizer: ``adamw``, ``adam`` or ``sgd`` (momentum 0.99, nesterov, as nnU-Net).
        scheduler: ``cosine`` (linear warm-up then cosine decay to 1% over all training
            steps) or ``constant``.
        warmup_steps: linear warm-up length in optimizer steps.
    """

    def __init__(
        self,
        model: str,
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_steps: int = 20,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={scheduler!r}; choose one of {list(SCHEDULERS)}")
        self.save_hyperparameters()
        self.subject_rows: dict[str, list[dict[str, Any]]] = {"val": [], "test": []}
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()

    # -- hooks for subclasses -------------------------------------------------------------
    def configure_models(self) -> None:
        raise NotImplementedError

    def configure_losses(self) -> None:
        pass

    def configure_metrics(self) -> None:
        pass

    # -- shared machinery -----------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=0.99, nesterov=True,
                                  weight_decay=hp.weight_decay)
        else:
            opt = OPTIMIZERS[hp.optimizer](params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "constant":
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(hp.warmup_steps, total // 2)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return cosine_factor((step - warmup) / max(1, total - warmup))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lets ``cogimg predict`` rebuild the task from a weights-only checkpoint.
        cls = type(self)
        checkpoint["cogimg"] = {"task": f"{cls.__module__}.{cls.__qualname__}"}
        # Paths in hyper-parameters would make the file unreadable with weights_only=True.
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = _plain(checkpoint[key])

    def on_validation_epoch_start(self) -> None:
        self.subject_rows["val"] = []

    def on_test_epoch_start(self) -> None:
        self.subject_rows["test"] = []


def cosine_factor(progress: float) -> float:
    """Learning-rate multiplier of the cosine schedule: 1 at ``progress`` 0, 0.01 at 1 and after."""
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _plain(value: Any) -> Any:
    """``value`` with paths as strings and tuples as lists, recursively (weights-only safe)."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
