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

Training add-ons (``addons:``, :mod:`cogimg.tasks.addons`) such as domain adaptation or a mean
teacher work through the protocol: :meth:`SegmentationTask.feature_module` is the U-Net
bottleneck, :meth:`SegmentationTask.unlabelled_logits` drops deep-supervision heads.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cogimg import models
from cogimg.metrics.segmentation import segmentation_report, summarise
from cogimg.models.postprocess import check_min_lesion_ml, remove_small_lesions
from cogimg.models.sliding_window import sliding_window_predict
from cogimg.tasks.addons import TrainingAddon, captured_input
from cogimg.tasks.base import BaseTask
from cogimg.tasks.explanation import SegmentationScore, predicted_region
from cogimg.tasks.losses import segmentation_loss
from cogimg.tasks.scoring import MeanScorer


class SegmentationTask(BaseTask):
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
        min_lesion_ml: post-processing of the argmax mask wherever the task makes one
            (``evaluate_batch`` and ``predict_case``): 26-connected components smaller than
            this volume (mL) are removed, per foreground class (``0`` = off;
            :mod:`cogimg.models.postprocess`; ``cogimg postprocess`` chooses it on the
            validation subjects).
        channels_last: keep weights and inputs of 3D networks in ``channels_last_3d`` memory
            format (same results; faster for most 3D networks on CPU, slower for some —
            ``benchmarks/model_step_time.py`` measures it; DynUNet's YAML turns it off).
            Ignored for networks with 2D layers (``unet2d_timm``).
        addons: training add-ons (e.g. ``cogimg.paradigms.adaptation.DomainAdaptation``,
            ``cogimg.paradigms.lowlabel.SemiSupervised``,
            ``cogimg.paradigms.lowlabel.PretrainedWeights``); they compose.
        **base: optimizer/scheduler arguments of :class:`BaseTask`.
    """

    kind = "segmentation"
    default_metric = "dice"
    leaderboard_metrics = ("dice", "lesion_f1", "absolute_volume_difference_ml",
                           "lesion_count_difference", "hausdorff95_mm")
    metric_labels: ClassVar[dict[str, str]] = {"dice": "Dice", "lesion_f1": "lesion F1",
                     "absolute_volume_difference_ml": "AVD (mL)", "lesion_count_difference": "ALD",
                     "hausdorff95_mm": "HD95 (mm)"}
    subject_scorer = MeanScorer

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
        min_lesion_ml: float = 0.0,
        channels_last: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_steps: int = 20,
        addons: list[TrainingAddon] | None = None,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: count background too (binary = 2)")
        if class_names is not None and len(class_names) != num_classes - 1:
            raise ValueError(f"class_names has {len(class_names)} names for "
                             f"{num_classes - 1} foreground classes")
        check_min_lesion_ml(min_lesion_ml)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.patch_size = tuple(int(s) for s in patch_size)
        super().__init__(model, model_kwargs, lr, weight_decay, optimizer, scheduler, warmup_steps,
                         addons)

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

    def feature_module(self) -> str:
        """The deepest ``submodule`` of a MONAI U-Net (its bottleneck: the input is the last
        encoder stage's output, ``(B, C, X/2^k, Y/2^k, Z/2^k)``)."""
        names = [n for n, _ in self.model.named_modules() if n.endswith("submodule")]
        if not names:
            raise ValueError(f"model {self.hparams.model!r} has no U-Net bottleneck; name the "
                             "module whose input are the features (the add-on's feature_module)")
        return max(names, key=lambda n: n.count("."))

    def feature_width(self, module_name: str) -> int:
        """Channels entering ``module_name``, from one forward pass on a zero patch."""
        module = self.model.get_submodule(module_name)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad(), captured_input(module) as store:
                device = next(self.model.parameters()).device
                self.model(torch.zeros(1, self.in_channels, *self.patch_size, device=device))
        finally:
            self.model.train(was_training)
        if "features" not in store:
            raise ValueError(f"feature_module {module_name!r} is not called in the forward pass; "
                             "name a module the model uses")
        return int(store["features"].shape[1])

    def configure_losses(self) -> None:
        self.loss_fn = segmentation_loss(self.hparams.loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` for ``x`` ``(B, C, X, Y, Z)`` (eval-mode output)."""
        return self.model(x)

    # -- training ------------------------------------------------------------------------
    def _network_output(self, model, image: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last_3d)
        return model(image)

    def logits(self, batch: dict, model=None) -> torch.Tensor:
        """Network output on a patch batch: ``(B, K, X, Y, Z)``, or ``(B, heads, K, X, Y, Z)``
        with deep supervision."""
        return self._network_output(model if model is not None else self.model, batch["image"])

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """Loss of ``logits`` output against ``batch["label"]`` ``(B, 1, X, Y, Z)`` (deep
        supervision heads weighted 1, ½, ¼ … and normalised)."""
        label = batch["label"].long()
        if output.ndim == label.ndim + 1:  # deep supervision: (B, heads, K, X, Y, Z)
            heads = torch.unbind(output, dim=1)
            weights = torch.tensor([0.5**i for i in range(len(heads))], device=output.device)
            weights = weights / weights.sum()
            return sum(w * self.loss_fn(h, label) for w, h in zip(weights, heads))
        return self.loss_fn(output, label)

    def unlabelled_logits(self, batch: dict, model=None) -> torch.Tensor:
        """Logits ``(B, K, X, Y, Z)`` of ``model`` (student or teacher) on an unlabelled batch."""
        output = self.logits(batch, model)
        return output[:, 0] if output.ndim == batch["image"].ndim + 1 else output

    def evaluation_logits(self, batch: dict, model=None) -> torch.Tensor:
        """Logits on the centre patch of whole volumes (too big to back-propagate through)."""
        image = batch["image"]
        starts = [max(0, (s - p) // 2) for s, p in zip(image.shape[2:], self.patch_size)]
        crop = image[(..., *[slice(a, a + p) for a, p in zip(starts, self.patch_size)])]
        return self.unlabelled_logits({"image": crop}, model)

    def explanation_target(self, image, availability=None, tabular=None, region="predicted",
                           windowed=True):
        """The lesion-logit sum over the predicted lesion (``region="predicted"``) or the whole
        volume, scored by sliding windows of the training patch (``windowed``); target 0."""
        scorer = SegmentationScore(self.model, roi_size=self.patch_size if windowed else None,
                                   overlap=self.hparams.sw_overlap,
                                   sw_batch_size=self.hparams.sw_batch_size).eval()
        if region == "predicted":
            scorer.set_region(predicted_region(scorer, image))
        return scorer, 0

    # -- whole-volume evaluation ---------------------------------------------------------
    def predict_volume(self, image: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities ``(B, K, X, Y, Z)`` of whole volumes by sliding windows."""
        hp = self.hparams
        return sliding_window_predict(
            self.model, image, self.patch_size, overlap=hp.sw_overlap,
            sw_batch_size=hp.sw_batch_size, tta_flip_axes=hp.tta_flip_axes,
            channels_last=self.channels_last,
        )

    def infer(self, batch: dict) -> torch.Tensor:
        return self.predict_volume(batch["image"])

    def predicted_mask(self, probabilities: torch.Tensor, spacing_mm) -> torch.Tensor:
        """Label map ``(X, Y, Z)`` int64 of one case's probabilities ``(K, X, Y, Z)``: the argmax,
        without components smaller than ``min_lesion_ml`` (voxel size ``spacing_mm``, mm)."""
        mask = probabilities.argmax(dim=0)
        threshold = check_min_lesion_ml(self.hparams.get("min_lesion_ml", 0.0))
        if threshold == 0:
            return mask
        if spacing_mm is None:
            raise ValueError(f"min_lesion_ml={threshold} needs the voxel size (spacing_mm) of "
                             "the predicted grid")
        kept = remove_small_lesions(mask.cpu().numpy(), spacing_mm, threshold)
        return torch.from_numpy(kept).to(mask.device)

    def predict_case(self, image: torch.Tensor, spacing_mm=None) -> dict[str, Any]:
        """``probabilities`` ``(K, X, Y, Z)`` and ``mask`` ``(X, Y, Z)`` (:meth:`predicted_mask`)
        of one preprocessed case ``image`` ``(1, C, X, Y, Z)`` with voxel size ``spacing_mm``
        (needed when ``min_lesion_ml > 0``)."""
        probs = self.predict_volume(image)[0]
        return {"probabilities": probs, "mask": self.predicted_mask(probs, spacing_mm)}

    def evaluate_batch(self, batch: dict, stage: str) -> list[dict[str, Any]]:
        probs = self.predict_volume(batch["image"])
        spacing = _as_spacing(batch.get("spacing_mm"), probs.shape[0])
        pred = torch.stack([self.predicted_mask(p, s) for p, s in zip(probs, spacing)])
        pred = pred.cpu().numpy()
        truth = batch["label"][:, 0].cpu().numpy()
        ids = batch.get("subject_id", [f"{stage}-{i}" for i in range(pred.shape[0])])
        names = self.hparams.class_names or tuple(f"class{k}" for k in range(1, self.num_classes))
        rows = []
        for i in range(pred.shape[0]):
            for k, name in enumerate(names, start=1):
                row = segmentation_report(pred[i] == k, truth[i] == k, spacing[i],
                                          subject_id=str(ids[i]))
                if self.num_classes > 2:
                    row["class"] = name
                rows.append(row)
        return rows

    def summarise(self, rows: list[dict[str, Any]], stage: str) -> dict[str, float]:
        """Subject means of every metric (and per class when multi-class: ``<metric>_<class>``)."""
        values = {}
        groups = {"": rows}  # mean over subjects (and classes); per class when multi-class
        if self.num_classes > 2:
            for name in dict.fromkeys(r["class"] for r in rows):
                groups[f"_{name}"] = [r for r in rows if r["class"] == name]
        for suffix, group in groups.items():
            metric_rows = [{k: v for k, v in r.items() if k != "class"} for r in group]
            for key, stats in summarise(metric_rows).items():
                values[f"{key}{suffix}"] = float(stats["mean"])
        return values


def _as_spacing(value, batch_size: int) -> list[tuple[float, float, float]]:
    """Per-sample voxel spacing in mm from a collated batch entry (tensor (B, 3) or list)."""
    if value is None:
        raise KeyError("validation batches must carry 'spacing_mm' (voxel size in mm) so "
                       "that volumes (mL) and HD95 (mm) are in physical units")
    arr = torch.as_tensor(value, dtype=torch.float64).reshape(batch_size, 3)
    return [tuple(float(v) for v in row) for row in arr]
