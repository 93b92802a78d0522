"""What every cogimg task shares (TorchGeo's ``BaseTask`` pattern), and the task protocol.

A task is a LightningModule that fills hooks — ``configure_models``, ``configure_losses``,
``configure_metrics``, and the protocol below — while this base owns the hyperparameters, the
optimizer and scheduler from config, the training step with its add-ons
(:mod:`cogimg.tasks.addons`), and the validation/test loop: per-subject rows collected per
stage (written to CSV by the run tracker) and their summary logged as ``<stage>/<metric>``.

The protocol every caller uses instead of ``isinstance`` (one module per task implements it):

- ``kind`` (``segmentation``, ``classification``, ``detection``, ``regression`` …),
  :attr:`primary_metric` and :attr:`metric_mode` (the class's default, replaced by the disease
  preset's ``primary_metric``/``metric_mode`` when the datamodule's preset is of the task's
  kind);
- training: ``model_input(batch)`` (the batch entry the network reads), ``logits(batch, model=None)``, ``loss(output, batch)``, ``unlabelled_logits``,
  ``evaluation_logits`` (test-time adaptation), ``feature_module()`` / ``feature_width(name)``
  (features that add-ons may align);
- evaluation: ``evaluate_batch(batch, stage) -> rows`` and ``summarise(rows, stage)``;
  ``subject_scorer`` (a :class:`~cogimg.tasks.scoring.SubjectScorer` class) re-scores any
  subset of a run's per-subject CSV, for leaderboards; ``leaderboard_metrics`` and
  ``metric_labels`` name what is reported;
- inference: ``infer(batch)`` (one evaluation batch as deployed, for latency),
  ``predict_case(image, spacing_mm)`` (one preprocessed case, for ``cogimg predict``) and
  ``explanation_target(image, …)`` (what attribution methods explain).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import LightningModule
from torch import nn

from cogimg.data.resumable import per_rank, rng_states, set_rng_states, this_rank
from cogimg.tasks.addons import LABELLED, TrainingAddon, TrainingStep, build_addons
from cogimg.tasks.scoring import SubjectScorer

OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
SCHEDULERS = ("cosine", "constant")
STAGES = ("val", "test")
#: Checkpoint key of the global random states of every process (:mod:`cogimg.data.resumable`).
RNG_KEY = "rng_states"


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
        addons: training add-ons (:class:`~cogimg.tasks.addons.TrainingAddon` instances or
            ``{class_path, init_args}`` mappings), e.g. domain adaptation and mean teacher.
    """

    kind: ClassVar[str] = ""
    default_metric: ClassVar[str] = ""
    default_mode: ClassVar[str] = "max"
    #: Metrics a leaderboard reports (the primary first) and their column labels.
    leaderboard_metrics: ClassVar[tuple[str, ...]] = ()
    metric_labels: ClassVar[dict[str, str]] = {}
    #: Re-scores any subset of a run's per-subject table (``subjects_<stage>.csv``).
    subject_scorer: ClassVar[type[SubjectScorer]] = SubjectScorer

    def __init__(
        self,
        model: str,
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_steps: int = 20,
        addons: Sequence[TrainingAddon | Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={scheduler!r}; choose one of {list(SCHEDULERS)}")
        built = build_addons(addons)
        self.save_hyperparameters(ignore=["addons"])
        self.hparams["addons"] = [a.to_hparams() for a in built]
        self.subject_rows: dict[str, list[dict[str, Any]]] = {s: [] for s in STAGES}
        self.primary_metric, self.metric_mode = self.default_metric, self.default_mode
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        self.addons = nn.ModuleList(built)

    # -- hooks for subclasses -------------------------------------------------------------
    def configure_models(self) -> None:
        raise NotImplementedError

    def configure_losses(self) -> None:
        pass

    def configure_metrics(self) -> None:
        pass

    def setup_task(self, stage: str, datamodule) -> None:
        """Task-specific setup with the trainer's datamodule (``None`` without one)."""

    # -- the protocol: training -----------------------------------------------------------
    def model_input(self, batch: Mapping[str, Any]) -> Any:
        """The network's input in ``batch``: ``batch[input_key]`` (the task's ``input_key``
        hyperparameter: ``image`` by default, ``connectome`` for connectome models)."""
        return batch.get(self.hparams.get("input_key", "image"))

    def logits(self, batch: Mapping[str, Any], model: nn.Module | None = None) -> torch.Tensor:
        """Network output of ``model`` (default: the task's) on a training batch."""
        raise NotImplementedError

    def loss(self, output: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor:
        """Supervised loss of ``logits`` output against ``batch``'s labels."""
        raise NotImplementedError

    def unlabelled_logits(self, batch: Mapping[str, Any], model: nn.Module | None = None) -> torch.Tensor:
        """Per-sample class logits ``(B, K, …)`` on an unlabelled batch (consistency losses)."""
        return self.logits(batch, model)

    def evaluation_logits(self, batch: Mapping[str, Any], model: nn.Module | None = None) -> torch.Tensor:
        """Logits of ``model`` on an evaluation batch, small enough to back-propagate through
        (test-time adaptation: AdaBN, TENT)."""
        return self.logits(batch, model)

    def feature_module(self) -> str:
        """Dotted name, inside ``self.model``, of the module whose *input* are the features that
        feature-level add-ons (domain alignment) work on."""
        raise NotImplementedError(f"{type(self).__name__} names no feature module; give one")

    def feature_width(self, module_name: str) -> int:
        """Channels ``D`` of the features entering ``module_name``."""
        raise NotImplementedError

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        step = TrainingStep(self, batch)
        for addon in self.addons:
            addon.before_forward(step)
        loss = self.loss(step.forward(), step.labelled)
        n = step.size
        terms = [(addon, result) for addon in self.addons
                 if (result := addon.training_loss(step)) is not None]
        if terms:
            self.log("train/supervised_loss", loss, batch_size=n)
        for addon, (term, logs) in terms:
            loss = loss + term
            self.log(f"train/{addon.name}_loss", term, batch_size=n)
            for key, value in logs.items():
                self.log(f"train/{key}", value, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    # -- the protocol: evaluation ---------------------------------------------------------
    def evaluate_batch(self, batch: Mapping[str, Any], stage: str) -> list[dict[str, Any]]:
        """Per-subject rows of one validation/test batch."""
        raise NotImplementedError

    def summarise(self, rows: list[dict[str, Any]], stage: str) -> dict[str, float]:
        """Run metrics of a stage's rows (logged as ``<stage>/<key>``)."""
        raise NotImplementedError

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.subject_rows["val"] += self.evaluate_batch(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.subject_rows["test"] += self.evaluate_batch(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.subject_rows["val"] = []

    def on_test_epoch_start(self) -> None:
        self.subject_rows["test"] = []

    def on_validation_epoch_end(self) -> None:
        self._log_summary("val")

    def on_test_epoch_end(self) -> None:
        self._log_summary("test")

    def _log_summary(self, stage: str) -> None:
        """Every rank's rows gathered (duplicates from the distributed sampler's padding
        dropped, sorted by subject), then scored once: under DDP every rank logs the values of
        all subjects, as one process would (``sync_dist`` averages identical values)."""
        self.subject_rows[stage] = unique_rows(self.gathered(self.subject_rows[stage]))
        self.gather_state(stage)
        rows = self.subject_rows[stage]
        if not rows:
            return
        for key, value in self.summarise(rows, stage).items():
            if value is not None and np.isfinite(value):
                self.log(f"{stage}/{key}", float(value), prog_bar=key == self.primary_metric,
                         sync_dist=True)

    def gathered(self, items: list) -> list:
        """``items`` of every rank, concatenated in rank order (this rank's alone outside DDP)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return list(items)
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]

    def gather_state(self, stage: str) -> None:
        """Gather per-rank evaluation state besides the rows (:meth:`gathered`); tasks that
        keep such state override this."""

    def explanation_target(self, image: torch.Tensor, availability: torch.Tensor | None = None,
                           tabular: torch.Tensor | None = None, region: str = "predicted",
                           windowed: bool = True) -> tuple[nn.Module, int]:
        """``(score module, default target index)`` that attribution methods explain for
        ``image`` ``(1, C, X, Y, Z)`` (:mod:`cogimg.tasks.explanation`)."""
        raise NotImplementedError(f"{type(self).__name__} has no explanation target")

    # -- the protocol: inference ----------------------------------------------------------
    def infer(self, batch: Mapping[str, Any]) -> Any:
        """Inference on one evaluation batch as deployed (timed for the leaderboard)."""
        return self.predict_step(batch, 0)

    def predict_case(self, image: torch.Tensor, spacing_mm=None) -> dict[str, Any]:
        """Prediction for one preprocessed case ``image`` ``(1, C, X, Y, Z)`` with voxel size
        ``spacing_mm`` (mm; dense tasks may need it to post-process): a dict with
        ``probabilities`` ``(K, X, Y, Z)`` and the label map ``mask`` ``(X, Y, Z)`` (dense
        tasks), ``detections`` (boxes) or ``values`` (case-level numbers by name, e.g.
        ``{"brain_age_years": 71.2}``)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict cases")

    # -- shared machinery -----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        preset = getattr(datamodule, "preset", None)
        if preset is not None and getattr(preset, "task", None) == self.kind:
            self.primary_metric, self.metric_mode = preset.primary_metric, preset.metric_mode
        self.setup_task(stage, datamodule)
        if stage == "fit" and self.addons:
            self._request_streams(datamodule)

    def configure_model(self) -> None:
        """Sets up the add-ons once the network exists (subclasses that build their network
        here call this after it)."""
        if self._trainer is None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        for addon in self.addons:
            addon.setup(self, datamodule, getattr(self.trainer.state.fn, "value", ""))

    def _request_streams(self, datamodule) -> None:
        required = {s for a in self.addons for s in a.streams}
        optional = {s for a in self.addons for s in a.optional_streams}
        offered = set(datamodule.stream_names()) if hasattr(datamodule, "stream_names") else set()
        if missing := sorted(required - offered):
            raise ValueError(f"addons {[a.name for a in self.addons]} need the training stream(s) "
                             f"{missing}, which {type(datamodule).__name__} does not offer "
                             f"(it offers {sorted(offered) or 'none'}; unlabelled data needs "
                             "label_fraction < 1, target-site data a TargetSite datamodule)")
        wanted = sorted(required | (optional & offered))
        if wanted:
            sizes = {s: next((b for a in self.addons if (b := a.stream_batch_size(s)) is not None),
                             None) for s in wanted}
            datamodule.request_streams(sizes)

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
        checkpoint["cogimg"] = {"task": f"{cls.__module__}.{cls.__qualname__}", "kind": self.kind,
                                "primary_metric": self.primary_metric, "metric_mode": self.metric_mode}
        if "hyper_parameters" in checkpoint:  # add-ons fill in options at setup (e.g. sites)
            checkpoint["hyper_parameters"]["addons"] = [a.to_hparams() for a in self.addons]
        # Paths in hyper-parameters would make the file unreadable with weights_only=True.
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = _plain(checkpoint[key])
        # Exact resume: every process's global random states (a collective under DDP, where
        # Lightning writes checkpoints from every rank); restored when training restarts.
        checkpoint[RNG_KEY] = per_rank(rng_states())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint.get(RNG_KEY)

    def on_train_start(self) -> None:
        # After the sanity check (which Lightning runs on isolated random states) and the
        # loaders' setup, as in the run that wrote the checkpoint.
        states, self._rng_to_restore = getattr(self, "_rng_to_restore", None), None
        if (state := this_rank(states, "random state")) is not None:
            set_rng_states(state)


def unique_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without exact duplicates (a distributed sampler pads the last shard with
    repeated subjects), sorted by ``subject_id`` (then ``class``): the same list whatever the
    number of processes."""
    unique = {json.dumps(row, sort_keys=True, default=str): row for row in rows}
    return [unique[k] for k in sorted(unique, key=lambda k: (str(unique[k].get("subject_id")),
                                                              str(unique[k].get("class", "")), k))]


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


__all__ = ["LABELLED", "BaseTask", "cosine_factor", "unique_rows"]
