"""SegmentationTask: patch training, whole-volume sliding-window validation, ISLES'22 metrics.

Batches (from ``cogimg.data.datamodules.PatchDataModule``):
    training: ``image`` (B, C, X, Y, Z) float32 patches, ``label`` (B, 1, X, Y, Z) integer.
    validation/test: one whole preprocessed volume per batch (B = 1) with ``subject_id`` and
    ``spacing_mm``; the task runs sliding-window inference over it and scores it with the
    ISLES'22 definitions (Dice, volume difference in mL, lesion count difference,
    lesion-wise F1, HD95 in mm), one row per subject in ``self.subject_rows``.

Binary lesion masks and multi-label maps both work: ``num_classes`` counts background, the
loss is softmax-based, and metrics are computed per foreground class (the binary case logs
plain names such as ``val/dice``; multi-class logs ``val/dice_<class>`` and their mean).

Low-label training (:mod:`cogimg.paradigms.lowlabel`): ``semi_supervised`` adds a mean-teacher
or pseudo-label loss on the datamodule's unlabelled patches; ``pretrained_weights`` starts
the network from a self-supervised weights file (loaded when fitting starts, so checkpoints
and ``cogimg predict`` never need it).

Domain adaptation across sites (:mod:`cogimg.paradigms.adaptation`): ``adaptation`` adds a
DANN site classifier or a CORAL/MMD alignment loss on the encoder's bottleneck features of the
training patches (and of the unlabelled target-site patches of a
:class:`~cogimg.paradigms.adaptation.datamodule.TargetSitePatchDataModule`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cogimg import models
from cogimg.inference import sliding_window_predict
from cogimg.metrics.segmentation import segmentation_report, summarise
from cogimg.paradigms.adaptation.domain import DomainAdaptation, SiteAdaptationMixin, captured_input
from cogimg.paradigms.lowlabel.pretrain import load_pretrained
from cogimg.paradigms.lowlabel.semi_supervised import SemiSupervised, SemiSupervisedConfig
from cogimg.tasks.base import BaseTask
from cogimg.tasks.losses import segmentation_loss


class SegmentationTask(SiteAdaptationMixin, BaseTask):
    """Dense lesion segmentation with any registry model.

    Args:
        model: registry name, e.g. ``unet``, ``dynunet``, ``unetr``, ``swinunetr``.
        in_channels: input modalities (stroke preset: DWI + ADC = 2).
        num_classes: output classes including background (binary lesion mask: 2).
        patch_size: training patch and sliding-window size, voxels (X, Y, Z).
        loss: ``dice_ce``, ``dice_focal`` or ``tversky`` (MONAI).
        sw_overlap: sliding-window overlap fraction at validation/test.
        sw_batch_size: windows per forward pass at validation/test.
        tta_flip_axes: mirror axes averaged at test time (e.g. ``[0]`` = left-right).
        class_names: optional names of the foreground classes, for metric keys.
        channels_last: keep weights and inputs of 3D networks in ``channels_last_3d`` memory
            format (same results; measured on 2 CPU cores per training step at 2 × 2 × 64³:
            UNet 4.7×, UNETR 1.6×, SegResNet 1.4× faster, but DynUNet 1.7× slower — its YAML
            turns it off). Ignored for networks with 2D layers (``unet2d_timm``).
        semi_supervised: e.g. ``{method: mean_teacher, weight: 1.0}`` or ``{method:
            pseudo_label, threshold: 0.9}`` (:class:`~cogimg.paradigms.lowlabel.SemiSupervisedConfig`);
            needs a datamodule with ``label_fraction`` < 1. ``None`` = supervised only.
        adaptation: e.g. ``{method: dann, weight: 0.1}`` (``dann``, ``coral`` or ``mmd``;
            :class:`~cogimg.paradigms.adaptation.AdaptationConfig`) on the features entering
            ``feature_module`` — by default the bottleneck of ``unet``/``attention_unet``
            (other models: name one); not combined with ``semi_supervised``.
        pretrained_weights: weights file of :func:`~cogimg.paradigms.lowlabel.pretrain_encoder`
            loaded into the network at the start of fitting.
        **base: optimizer/scheduler arguments of :class:`BaseTask`.
    """

    def __init__(
        self,
        model: str = "unet",
        in_channels: int = 2,
        num_classes: int = 2,
        patch_size: tuple[int, int, int] = (64, 64, 64),
        model_kwargs: dict[str, Any] | None = None,
        loss: str = "dice_ce",
        sw_overlap: float = 0.5,
        sw_batch_size: int = 4,
        tta_flip_axes: tuple[int, ...] = (),
        class_names: tuple[str, ...] | None = None,
        channels_last: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_steps: int = 20,
        semi_supervised: dict[str, Any] | None = None,
        pretrained_weights: str | None = None,
        adaptation: dict[str, Any] | None = None,
    ) -> None:
        if adaptation is not None and semi_supervised is not None:
            raise ValueError("choose adaptation or semi_supervised; both at once is not supported")
        self._init_adaptation(adaptation)
        self.semi_supervised = (SemiSupervised(SemiSupervisedConfig.from_dict(semi_supervised))
                                if semi_supervised is not None else None)
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: count background too (binary = 2)")
        if class_names is not None and len(class_names) != num_classes - 1:
            raise ValueError(f"class_names has {len(class_names)} names for "
                             f"{num_classes - 1} foreground classes")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = tuple(int(s) for s in patch_size)
        super().__init__(model, model_kwargs, lr, weight_decay, optimizer, scheduler, warmup_steps)

    def configure_models(self) -> None:
        self.model = models.get(
            self.hparams.model, in_channels=self.in_channels, out_channels=self.num_classes,
            patch_size=self.patch_size, **(self.hparams.model_kwargs or {}),
        )
        # channels_last_3d needs rank-5 weights; slice-wise 2D networks keep their layout.
        self.channels_last = self.hparams.channels_last and all(
            p.ndim != 4 for p in self.model.parameters())
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.domain_adaptation: DomainAdaptation | None = None
        self._build_adaptation()

    def default_feature_module(self) -> str:
        """The deepest ``submodule`` of a MONAI U-Net (its bottleneck: the input is the last
        encoder stage's output, ``(B, C, X/2^k, Y/2^k, Z/2^k)``)."""
        names = [n for n, _ in self.model.named_modules() if n.endswith("submodule")]
        if not names:
            raise ValueError(f"model {self.hparams.model!r} has no U-Net bottleneck to adapt; name "
                             "the module whose input are the features in adaptation.feature_module")
        return max(names, key=lambda n: n.count("."))

    def adaptation_feature_width(self, module: torch.nn.Module) -> int:
        """Channels entering ``module``, from one forward pass on a zero patch."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), captured_input(module) as store:
                device = next(self.model.parameters()).device
                self.model(torch.zeros(1, self.in_channels, *self.patch_size, device=device))
        finally:
            self.model.train(was_training)
        if "features" not in store:
            raise ValueError(f"adaptation.feature_module {self._adaptation_config.feature_module!r} "
                             "is not called in the forward pass; name a module the model uses")
        return int(store["features"].shape[1])

    def configure_losses(self) -> None:
        self.loss = segmentation_loss(self.hparams.loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` for ``x`` ``(B, C, X, Y, Z)`` (eval-mode output)."""
        return self.model(x)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.pretrained_weights:
            load_pretrained(self.model, self.hparams.pretrained_weights, self.hparams.model)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and self._adaptation_config is not None and datamodule is not None:
            self._setup_adaptation(datamodule)

    # -- training ------------------------------------------------------------------------
    def _network_output(self, model, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        return model(image)

    def _logits(self, batch: dict) -> torch.Tensor:
        """Network output on a patch batch: ``(B, K, X, Y, Z)``, or ``(B, heads, K, X, Y, Z)``
        with deep supervision."""
        return self._network_output(self.model, batch["image"])

    def _loss(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Loss of ``_logits`` output against ``label`` ``(B, 1, X, Y, Z)`` (deep supervision
        heads weighted 1, ½, ¼ … and normalised)."""
        if output.ndim == label.ndim + 1:  # deep supervision: (B, heads, K, X, Y, Z)
            heads = torch.unbind(output, dim=1)
            weights = torch.tensor([0.5**i for i in range(len(heads))], device=output.device)
            weights = weights / weights.sum()
            return sum(w * self.loss(h, label) for w, h in zip(weights, heads))
        return self.loss(output, label)

    def supervised_loss(self, batch: dict) -> tuple[torch.Tensor, int]:
        """Loss on a labelled patch batch and B."""
        return self._loss(self._logits(batch), batch["label"].long()), batch["image"].shape[0]

    def unlabelled_logits(self, model, batch: dict) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` of ``model`` (student or teacher) on an unlabelled batch."""
        image = batch["image"]
        output = self._network_output(model, image)
        return output[:, 0] if output.ndim == image.ndim + 1 else output

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.domain_adaptation is not None:
            return self.domain_adaptation.training_step(self, batch)
        if self.semi_supervised is not None:
            return self.semi_supervised.training_step(self, batch)
        loss, n = self.supervised_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss

    # -- whole-volume evaluation ---------------------------------------------------------
    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(B, K, X, Y, Z)`` of whole volumes by sliding windows."""
        hp = self.hparams
        return sliding_window_predict(
            self.model, image, self.patch_size, overlap=hp.sw_overlap,
            sw_batch_size=hp.sw_batch_size, tta_flip_axes=hp.tta_flip_axes,
            channels_last=self.channels_last,
        )

    def _evaluate(self, batch: dict, stage: str) -> None:
        probs = self.predict_volume(batch["image"])
        pred = probs.argmax(dim=1).cpu().numpy()
        truth = batch["label"][:, 0].cpu().numpy()
        spacing = _as_spacing(batch.get("spacing_mm"), pred.shape[0])
        ids = batch.get("subject_id", [f"{stage}-{i}" for i in range(pred.shape[0])])
        names = self.hparams.class_names or tuple(f"class{k}" for k in range(1, self.num_classes))
        for i in range(pred.shape[0]):
            for k, name in enumerate(names, start=1):
                row = segmentation_report(pred[i] == k, truth[i] == k, spacing[i],
                                          subject_id=str(ids[i]))
                if self.num_classes > 2:
                    row["class"] = name
                self.subject_rows[stage].append(row)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_summary(self, stage: str) -> None:
        rows = self.subject_rows[stage]
        if not rows:
            return
        groups = {"": rows}  # mean over subjects (and classes); per class when multi-class
        if self.num_classes > 2:
            for name in dict.fromkeys(r["class"] for r in rows):
                groups[f"_{name}"] = [r for r in rows if r["class"] == name]
        for suffix, group in groups.items():
            metric_rows = [{k: v for k, v in r.items() if k != "class"} for r in group]
            for key, stats in summarise(metric_rows).items():
                if np.isfinite(stats["mean"]):
                    self.log(f"{stage}/{key}{suffix}", float(stats["mean"]),
                             prog_bar=key == "dice" and not suffix, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self._log_summary("val")

    def on_test_epoch_end(self) -> None:
        self._log_summary("test")


def _as_spacing(value, batch_size: int) -> list[tuple[float, float, float]]:
    """Per-sample voxel spacing in mm from a collated batch entry (tensor (B, 3) or list)."""
    if value is None:
        raise KeyError("validation batches must carry 'spacing_mm' (voxel size in mm) so "
                       "that volumes (mL) and HD95 (mm) are in physical units")
    arr = torch.as_tensor(value, dtype=torch.float64).reshape(batch_size, 3)
    return [tuple(float(v) for v in row) for row in arr]
