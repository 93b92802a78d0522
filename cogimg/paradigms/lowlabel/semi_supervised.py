"""Semi-supervised training, a training add-on of any task: mean teacher and pseudo-labelling.

``addons: [{class_path: cogimg.paradigms.lowlabel.SemiSupervised, init_args: {method:
mean_teacher, weight: 1.0}}]`` adds to the task's training step:

1. (the task's own supervised loss on the labelled batch: ground truth, never replaced);
2. a batch of **unlabelled** images, the datamodule's ``unlabelled`` training stream
   (the fold's training subjects outside ``label_fraction``, images only — no labels);
3. a *teacher* network predicts on one perturbation of it, the student (the task's
   model) on another (independent Gaussian noise, ``noise_std`` in z-scored intensity
   units, on top of the datamodule's augmentation);
4. ``loss = supervised + weight · ramp(step) · unsupervised`` with the sigmoid ramp-up
   ``exp(-5 (1 - t)²)``, ``t = step / rampup_steps`` (Laine & Aila 2017).

Methods:

- ``mean_teacher`` (Tarvainen & Valpola 2017): the teacher is an exponential moving
  average of the student's weights (:func:`ema_update`, decay ``min(ema_decay, 1 - 1/(s+1))``),
  the unsupervised loss the mean squared difference of their softmax outputs.
- ``pseudo_label`` (self-training in rounds): the teacher is a frozen copy of the student
  taken at the start of every round of ``round_steps`` optimizer steps (or, without it,
  ``round_epochs`` epochs — beware that an epoch shrinks with ``label_fraction``: at 10 %
  labels a patch epoch can be 4 steps); round 0 is supervised only. The teacher's
  predictions with confidence ≥ ``threshold`` (per voxel for segmentation, per volume for
  classification) are cross-entropy targets, the others are ignored. For segmentation
  (``class_balanced``), the cross-entropy is averaged per pseudo-class over its accepted
  voxels and then over classes, as otherwise the confident background (≈ 99 % of voxels)
  outweighs the lesion voxels by two orders of magnitude. With
  ``pseudo_label_dir``, each round's pseudo-labels are also written there (a folder outside
  the dataset, see :mod:`cogimg.paradigms.lowlabel.pseudo_labels`).

Both work on logits ``(B, K)`` (classification) and ``(B, K, X, Y, Z)`` (segmentation); the
task's protocol supplies ``unlabelled_logits(batch, model)``. The
teacher is not part of the task's state dict: checkpoints hold the student only (resuming
restarts the teacher from it), and evaluation uses the student.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogimg.paradigms.options import checked_section
from cogimg.tasks.addons import TrainingAddon, TrainingStep

METHODS = ("mean_teacher", "pseudo_label")


@dataclass(frozen=True)
class SemiSupervisedConfig:
    """Options of a task's ``semi_supervised:`` entry.

    Attributes:
        method: ``mean_teacher`` or ``pseudo_label``.
        weight: maximum weight of the unsupervised loss.
        rampup_steps: optimizer steps of the sigmoid ramp-up of ``weight`` (0 = none).
        noise_std: σ of the Gaussian noise added to the unlabelled images (z-score units).
        ema_decay: mean teacher: EMA decay of the teacher weights per step.
        threshold: pseudo_label: minimum teacher probability of a pseudo-label.
        round_epochs: pseudo_label: epochs per self-training round (when ``round_steps`` is None).
        round_steps: pseudo_label: optimizer steps per self-training round (overrides
            ``round_epochs``; independent of the label fraction's epoch length).
        class_balanced: pseudo_label: for dense (segmentation) outputs, average the
            cross-entropy per pseudo-class, then over classes (see the module docstring).
        unlabelled_batch_size: unlabelled samples per step (``None`` = the datamodule's).
        pseudo_label_dir: pseudo_label: write each round's pseudo-labels under this folder.
        stream: the datamodule's training stream of unlabelled images: ``unlabelled`` (the
            fold's training subjects outside ``label_fraction``) or ``target`` (the held-out
            site's images of a TargetSite datamodule: self-ensembling for domain adaptation,
            French et al. 2018).
    """

    method: str
    weight: float = 1.0
    rampup_steps: int = 100
    noise_std: float = 0.1
    ema_decay: float = 0.99
    threshold: float = 0.9
    round_epochs: int = 5
    round_steps: int | None = None
    class_balanced: bool = True
    unlabelled_batch_size: int | None = None
    pseudo_label_dir: str | None = None
    stream: str = "unlabelled"

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> SemiSupervisedConfig:
        """Validate a config mapping; errors name the ``semi_supervised`` key at fault."""
        config = cls(**checked_section(options, "semi_supervised", cls, METHODS, "{method: mean_teacher}"))
        checks = {"weight": config.weight >= 0, "rampup_steps": config.rampup_steps >= 0,
                  "noise_std": config.noise_std >= 0, "ema_decay": 0 <= config.ema_decay < 1,
                  "threshold": 0 <= config.threshold <= 1, "round_epochs": config.round_epochs >= 1,
                  "round_steps": config.round_steps is None or config.round_steps >= 1,
                  "stream": config.stream in ("unlabelled", "target")}
        if bad := [k for k, ok in checks.items() if not ok]:
            raise ValueError(f"semi_supervised: out-of-range value(s) for {bad}: "
                             f"{ {k: getattr(config, k) for k in bad} }")
        return config

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t)²)`` with ``t = clip(step / length, 0, 1)``; 1 when ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(step / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``θ_teacher ← decay · θ_teacher + (1 − decay) · θ_student`` for every parameter;
    buffers (batch-norm statistics, counters) are copied from the student."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s.detach(), 1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of softmax probabilities (over classes, voxels and samples)."""
    return F.mse_loss(student_logits.float().softmax(1), teacher_logits.float().softmax(1))


def pseudo_label_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      threshold: float, class_balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy to the teacher's argmax where its probability ≥ ``threshold``.

    Returns the loss and the accepted fraction. The loss is averaged over *all*
    samples/voxels (unconfident ones count as 0, as in FixMatch), or with ``class_balanced``
    the mean over pseudo-classes of each class's mean cross-entropy over its accepted
    samples/voxels (0 when nothing is accepted).
    """
    confidence, target = teacher_logits.float().softmax(1).max(1)
    accepted = (confidence >= threshold).float()
    ce = F.cross_entropy(student_logits.float(), target, reduction="none")
    if not class_balanced:
        return (ce * accepted).mean(), accepted.mean()
    per_class = []
    for k in range(student_logits.shape[1]):
        mask = accepted * (target == k).float()
        if mask.sum() > 0:
            per_class.append((ce * mask).sum() / mask.sum())
    loss = torch.stack(per_class).mean() if per_class else (ce * 0.0).sum()
    return loss, accepted.mean()


class SemiSupervised(TrainingAddon):
    """The unlabelled half of a task's training step (see the module docstring).

    Args: as :class:`SemiSupervisedConfig`. The teacher is kept out of the add-on's modules,
    so it stays out of the task's parameters, optimizer and checkpoints.
    """

    def __init__(self, method: str = "mean_teacher", weight: float = 1.0, rampup_steps: int = 100,
                 noise_std: float = 0.1, ema_decay: float = 0.99, threshold: float = 0.9,
                 round_epochs: int = 5, round_steps: int | None = None, class_balanced: bool = True,
                 unlabelled_batch_size: int | None = None, pseudo_label_dir: str | None = None,
                 stream: str = "unlabelled") -> None:
        super().__init__()
        self.options = SemiSupervisedConfig.from_dict({
            "method": method, "weight": weight, "rampup_steps": rampup_steps,
            "noise_std": noise_std, "ema_decay": ema_decay, "threshold": threshold,
            "round_epochs": round_epochs, "round_steps": round_steps,
            "class_balanced": class_balanced, "unlabelled_batch_size": unlabelled_batch_size,
            "pseudo_label_dir": pseudo_label_dir, "stream": stream})
        self.name = method
        self.streams = (self.options.stream,)
        object.__setattr__(self, "teacher", None)  # not a submodule (see the class docstring)
        self.round = 0
        self._ema_step = -1

    def config(self) -> dict[str, Any]:
        return self.options.to_dict()

    def stream_batch_size(self, stream: str) -> int | None:
        return self.options.unlabelled_batch_size

    def _perturbed(self, batch: dict) -> dict:
        noise = torch.randn_like(batch["image"]) * self.options.noise_std
        return {**batch, "image": batch["image"] + noise}

    # ---------------------------------------------------------------- teacher
    def _update_teacher(self, task) -> None:
        if self.teacher is None:
            object.__setattr__(self, "teacher", copy.deepcopy(task.model).requires_grad_(False))
            self._ema_step = task.global_step
        if self.options.method == "mean_teacher":
            if task.global_step > self._ema_step:  # once per optimizer step, after it
                decay = min(self.options.ema_decay, 1.0 - 1.0 / (task.global_step + 1))
                ema_update(self.teacher, task.model, decay)
                self._ema_step = task.global_step
            return
        current = (task.global_step // self.options.round_steps if self.options.round_steps
                   else task.current_epoch // self.options.round_epochs)
        if current != self.round:
            self.teacher.load_state_dict(task.model.state_dict())
            self.round = current
            if self.options.pseudo_label_dir is not None:
                from cogimg.paradigms.lowlabel.pseudo_labels import write_pseudo_labels

                write_pseudo_labels(task, task.trainer.datamodule, Path(self.options.pseudo_label_dir)
                                    / f"round-{current}", self.options.threshold)

    # ---------------------------------------------------------------- loss
    def unsupervised_loss(self, task, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, logs)`` on one unlabelled batch (teacher updated first)."""
        if "label" in batch:
            raise RuntimeError("unlabelled batch carries labels; the datamodule must strip them")
        self._update_teacher(task)
        if self.options.method == "pseudo_label" and self.round == 0:
            return torch.zeros((), device=task.device), {"pseudo_accepted": 0.0}  # no teacher yet
        self.teacher.eval()
        with torch.no_grad():
            teacher_logits = task.unlabelled_logits(self._perturbed(batch), self.teacher)
        student_logits = task.unlabelled_logits(self._perturbed(batch), task.model)
        if self.options.method == "mean_teacher":
            return consistency_loss(student_logits, teacher_logits), {}
        balanced = self.options.class_balanced and student_logits.ndim > 2
        loss, accepted = pseudo_label_loss(student_logits, teacher_logits, self.options.threshold,
                                           balanced)
        return loss, {"pseudo_accepted": float(accepted)}

    def training_loss(self, step: TrainingStep) -> tuple[torch.Tensor, dict[str, float]]:
        """Ramped weight · unsupervised loss on the step's unlabelled batch."""
        task = step.task
        unsupervised, logs = self.unsupervised_loss(task, step.streams[self.options.stream])
        weight = self.options.weight * sigmoid_rampup(task.global_step, self.options.rampup_steps)
        return weight * unsupervised, {**logs, "unsupervised_weight": weight}
