"""ClassificationTask: disease classification and staging from whole volumes (+ clinical data).

Batches (from ``cogimg.data.datamodules.VolumeDataModule``): ``image`` (B, M, X, Y, Z)
float32 with the modalities as channels in order (zeros for a missing one),
``availability`` (B, M), ``label`` (B,) int64 index into the preset's classes, ``tabular``
(B, F) standardised clinical features + missingness indicators, ``subject_id``.

The model is chosen by ``fusion`` (:mod:`cogimg.models.fusion`): ``single`` / ``early``
(one backbone on the stacked modalities), ``intermediate`` (per-modality encoders, fused
features), ``late`` (per-modality classifiers, averaged probabilities) or ``tabular``
(clinical features only); ``use_tabular`` adds the clinical MLP branch to any image model.

Validation and test keep one row per subject in ``self.subject_rows[stage]``
(``subject_id``, ``label``, ``pred`` as class names, ``prob_<class>``, ``loss`` — the
subject's class-weighted cross-entropy …) and log
``<stage>/balanced_accuracy`` (the presets' primary metric), ``accuracy``, ``auroc``
(one-vs-rest macro for more than two classes), ``f1_macro`` and ``loss``, computed over
subjects (a subject seen twice — e.g. two sessions — counts once, with its probabilities
averaged). The test stage also logs 95 % bootstrap intervals
(``test/balanced_accuracy_ci_low`` / ``_ci_high``, stratified, 1000 resamples).

Calibration: the logits of the latest validation epoch are kept, and every checkpoint
saved right after it stores a temperature fitted on them by NLL
(:func:`~cogimg.metrics.calibration.calibration_summary`) under
``checkpoint["cogimg"]["calibration"]``; ``cogimg clinical`` reports probabilities
``softmax(logits / T)`` with it.
Under DDP the rows of every process are gathered and scored once (:class:`~cogimg.tasks.base.BaseTask`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from cogimg.metrics.calibration import calibration_summary
from cogimg.metrics.classification import bootstrap_ci, classification_report
from cogimg.models.connectome import INPUT_KEYS, build_connectome_model, with_num_nodes
from cogimg.models.fusion import FUSIONS, build_fusion_model
from cogimg.tasks.addons import TrainingAddon
from cogimg.tasks.base import BaseTask
from cogimg.tasks.explanation import ClassificationScore
from cogimg.tasks.scoring import ClassScorer


class ClassificationTask(BaseTask):
    """Binary or multi-class classification of subjects with any classification backbone.

    Args:
        model: classification registry name (``resnet10_3d`` — the CPU-sized default 3D CNN —,
            ``resnet18_3d``, ``resnet50_3d``, ``densenet121_3d``, ``vit_3d``, ``timm_2p5d``).
        classes: class names in label-index order (the preset's ``classes``, e.g.
            ``[CN, MCI, AD]``); checked against the datamodule's preset at setup.
        modalities: names of the batch's image channels in order (the datamodule's
            ``modalities``); checked at setup.
        input_shape: volume shape ``(X, Y, Z)`` in voxels (the datamodule's ``target_shape``).
        fusion: ``single``, ``early``, ``intermediate``, ``late`` or ``tabular``.
        use_modalities: the modalities the model reads (``None`` = all of ``modalities``):
            a unimodal baseline on a multimodal datamodule is ``fusion: single,
            use_modalities: [pet_amyloid]``.
        use_tabular: add the clinical MLP branch (needed by ``fusion: tabular``).
        tabular_features: width ``F`` of ``tabular``; ``None`` = read from the datamodule
            at setup (then stored in the hyperparameters, so checkpoints rebuild without it).
        fusion_head: intermediate fusion: ``concat``, ``gated`` or ``attention``.
        late_combine: late fusion: average ``prob`` or ``logit``.
        modality_dropout: probability of dropping each available modality per sample in
            training (never all).
        class_weights: cross-entropy class weights: ``None`` (equal), ``"balanced"``
            (``n / (K · n_k)`` from the training labels, as scikit-learn's
            ``compute_class_weight``) or one weight per class.
        label_smoothing: cross-entropy label smoothing in [0, 1).
        model_kwargs: extra arguments of the backbone builder.
        addons: training add-ons (domain adaptation, semi-supervision …; they compose), whose
            feature-level losses see the features entering the classifier ``head``.
        input_key: batch entry the network reads: ``image`` (volumes, through the fusion models
            above) or ``connectome`` (a registry model tagged ``connectome``, e.g.
            ``brainnetcnn``; its ``num_nodes`` from ``model_kwargs`` or else the datamodule's).
        **base: optimizer/scheduler arguments of :class:`BaseTask`.
    """

    kind = "classification"
    default_metric = "balanced_accuracy"
    leaderboard_metrics = ("balanced_accuracy", "auroc", "f1_macro", "accuracy")
    metric_labels: ClassVar[dict[str, str]] = {"balanced_accuracy": "BA", "auroc": "AUROC", "f1_macro": "macro F1",
                     "accuracy": "accuracy"}
    subject_scorer = ClassScorer

    def __init__(
        self,
        model: str = "resnet10_3d",
        classes: Sequence[str] = ("CN", "MCI", "AD"),
        modalities: Sequence[str] = ("T1w",),
        input_shape: tuple[int, int, int] = (48, 56, 48),
        fusion: str = "early",
        use_modalities: Sequence[str] | None = None,
        use_tabular: bool = False,
        tabular_features: int | None = None,
        fusion_head: str = "concat",
        late_combine: str = "prob",
        modality_dropout: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        optimizer: str = "adamw",
        scheduler: str = "cosine",
        warmup_steps: int = 20,
        addons: list[TrainingAddon] | None = None,
        input_key: str = "image",
    ) -> None:
        if input_key not in INPUT_KEYS:
            raise ValueError(f"input_key={input_key!r}; choose one of {list(INPUT_KEYS)}")
        self.classes = tuple(str(c) for c in classes)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be at least two distinct names, got {list(classes)}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r}; choose one of {list(FUSIONS)}")
        if fusion == "tabular" and not use_tabular:
            raise ValueError("fusion='tabular' classifies from clinical features: set use_tabular=True")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if isinstance(class_weights, str) and class_weights != "balanced":
            raise ValueError(f"class_weights={class_weights!r}: use 'balanced', a list of "
                             f"{len(self.classes)} weights, or None")
        if not (class_weights is None or isinstance(class_weights, str)) and (
            len(class_weights) != len(self.classes) or any(float(w) < 0 for w in class_weights)
        ):
            raise ValueError(f"class_weights needs {len(self.classes)} non-negative weights "
                             f"(one per class {list(self.classes)}), got {list(class_weights)}")
        self.num_classes = len(self.classes)
        super().__init__(model, model_kwargs, lr, weight_decay, optimizer, scheduler, warmup_steps,
                         addons)
        # Validation logits/labels of the current epoch and the step they belong to (calibration).
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._val_outputs_step: int | None = None

    # -- hooks ---------------------------------------------------------------------------
    def configure_models(self) -> None:
        hp = self.hparams
        self.model = None
        if hp.use_tabular and hp.tabular_features is None:
            return  # built in configure_model() once the datamodule tells the width
        if hp.input_key != "image" and "num_nodes" not in (hp.model_kwargs or {}):
            return  # built in configure_model() once the datamodule tells the regions
        self._build_model(int(hp.tabular_features or 0) if hp.use_tabular else 0)

    def _build_model(self, tabular_features: int) -> None:
        hp = self.hparams
        if hp.input_key != "image":
            self.model = build_connectome_model(hp.model, num_outputs=self.num_classes,
                                                model_kwargs=hp.model_kwargs)
            return
        self.model = build_fusion_model(
            hp.fusion, backbone=hp.model, modalities=hp.modalities, num_classes=self.num_classes,
            input_shape=hp.input_shape, use_modalities=hp.use_modalities,
            tabular_features=tabular_features, backbone_kwargs=hp.model_kwargs,
            fusion_head=hp.fusion_head, late_combine=hp.late_combine,
            modality_dropout=hp.modality_dropout,
        )

    def feature_module(self) -> str:
        return "head"

    def feature_width(self, module_name: str) -> int:
        module = self.model.get_submodule(module_name)
        if not hasattr(module, "in_features"):
            raise ValueError(f"feature_module {module_name!r} is a {type(module).__name__}; name a "
                             f"linear layer (fusion {self.hparams.fusion!r} has its features at "
                             "'head' except late fusion)")
        return int(module.in_features)

    def configure_losses(self) -> None:
        weights = self.hparams.class_weights
        initial = torch.ones(self.num_classes) if weights is None or isinstance(weights, str) \
            else torch.tensor([float(w) for w in weights])
        # A buffer (not a loss-module attribute) so that checkpoints always hold it.
        self.register_buffer("class_weight", initial)

    def setup_task(self, stage: str, datamodule) -> None:
        if datamodule is not None:
            self._check_datamodule(datamodule)
            if stage == "fit" and self.hparams.class_weights == "balanced":
                self.class_weight.copy_(self._balanced_weights(datamodule))

    def configure_model(self) -> None:
        if self.model is None:
            self._build_model_from_datamodule()
        super().configure_model()

    def _build_model_from_datamodule(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.hparams.input_key != "image":
            self.hparams.model_kwargs = with_num_nodes(self.hparams.model_kwargs, datamodule)
            self._build_model(0)
            return
        features = getattr(datamodule, "tabular_features", None)
        if not features:
            raise ValueError("use_tabular=True but the datamodule provides no tabular features "
                             "(set its tabular columns, or give tabular_features explicitly)")
        self.hparams.tabular_features = len(features)
        self._build_model(len(features))

    def _check_datamodule(self, datamodule) -> None:
        mods = getattr(datamodule, "modalities", None)
        if mods is not None and tuple(mods) != tuple(self.hparams.modalities):
            raise ValueError(f"ClassificationTask modalities {list(self.hparams.modalities)} differ from "
                             f"the datamodule's image channels {list(mods)}; list them in the same order")
        preset = getattr(datamodule, "preset", None)
        if preset is not None and tuple(preset.classes) != self.classes:
            raise ValueError(f"ClassificationTask classes {list(self.classes)} differ from preset "
                             f"{preset.name!r}'s {list(preset.classes)}")
        shape = getattr(getattr(datamodule, "config", None), "target_shape", None)
        if shape is not None and tuple(shape) != tuple(self.hparams.input_shape):
            raise ValueError(f"ClassificationTask input_shape {tuple(self.hparams.input_shape)} differs "
                             f"from the datamodule's target_shape {tuple(shape)}")

    def _balanced_weights(self, datamodule) -> torch.Tensor:
        if not hasattr(datamodule, "class_counts"):
            raise ValueError("class_weights='balanced' needs a datamodule with class_counts() "
                             "(training subjects per class); give explicit weights instead")
        counts = datamodule.class_counts()
        if empty := [c for c in self.classes if counts.get(c, 0) == 0]:
            raise ValueError(f"class_weights='balanced': no training subject of class {empty}")
        n = np.array([counts[c] for c in self.classes], dtype=np.float64)
        return torch.as_tensor(n.sum() / (len(n) * n), dtype=self.class_weight.dtype)

    # -- forward and training ------------------------------------------------------------
    def forward(self, image: torch.Tensor, availability: torch.Tensor | None = None,
                tabular: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, K)`` for ``image`` ``(B, M, X, Y, Z)`` (+ availability, tabular)."""
        if self.model is None:
            raise RuntimeError("the model is built at setup (tabular width from the datamodule); "
                               "pass tabular_features to build it without a trainer")
        return self.model(image, availability, tabular)

    def logits(self, batch: dict, model=None) -> torch.Tensor:
        """Logits ``(B, K)`` of ``model`` (default: the task's network) on ``batch``."""
        if model is None:
            return self(self.model_input(batch), batch.get("availability"), batch.get("tabular"))
        return model(self.model_input(batch), batch.get("availability"), batch.get("tabular"))

    def loss(self, output: torch.Tensor, batch: dict) -> torch.Tensor:
        """Cross-entropy (class weights, label smoothing) against ``batch["label"]`` ``(B,)``."""
        return F.cross_entropy(output, batch["label"].long(), weight=self.class_weight,
                               label_smoothing=self.hparams.label_smoothing)

    def explanation_target(self, image, availability=None, tabular=None, region="predicted",
                           windowed=True):
        """The class logits with ``availability`` and ``tabular`` held fixed; the target is
        the predicted class."""
        if self.model is None:
            raise ValueError("the classification task has no model yet (tabular width unknown)")
        if getattr(self.model, "tabular", None) is not None and tabular is None:
            raise ValueError("this classifier also reads clinical (tabular) features; pass them "
                             "so they can be held fixed while the image is explained")
        scorer = ClassificationScore(self.model, availability, tabular).eval()
        with torch.no_grad():
            target = int(scorer(image).argmax(dim=1)[0])
        return scorer, target

    # -- evaluation ----------------------------------------------------------------------
    def infer(self, batch: dict) -> torch.Tensor:
        return self.logits(batch).softmax(dim=1)

    def evaluate_batch(self, batch: dict, stage: str) -> list[dict[str, Any]]:
        label = batch["label"].long()
        logits = self.logits(batch)
        losses = F.cross_entropy(logits.float(), label, weight=self.class_weight, reduction="none",
                                 label_smoothing=self.hparams.label_smoothing).tolist()
        if stage == "val":
            self._val_outputs.append((logits.detach().float().cpu(), label.cpu()))
        prob = logits.float().softmax(dim=1).cpu().numpy()
        ids = batch.get("subject_id") or [f"{stage}-{len(self.subject_rows[stage]) + i}"
                                          for i in range(len(label))]
        rows = []
        for i, y in enumerate(label.tolist()):
            row = {"subject_id": str(ids[i]), "label": self.classes[y],
                   "pred": self.classes[int(prob[i].argmax())], "loss": losses[i]}
            row.update({f"prob_{c}": float(p) for c, p in zip(self.classes, prob[i])})
            rows.append(row)
        return rows

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """``{"subject_id": [...], "prob": (B, K) tensor}``."""
        return {"subject_id": batch.get("subject_id"), "prob": self.logits(batch).softmax(dim=1)}

    def subject_table(self, stage: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(subject ids, labels (N,), probabilities (N, K))`` with one entry per subject
        (rows of the same subject averaged)."""
        grouped: dict[str, list[dict]] = defaultdict(list)
        for row in self.subject_rows[stage]:
            grouped[row["subject_id"]].append(row)
        ids = sorted(grouped)
        labels = np.array([self.classes.index(grouped[s][0]["label"]) for s in ids], dtype=np.int64)
        prob = np.array([[np.mean([r[f"prob_{c}"] for r in grouped[s]]) for c in self.classes] for s in ids])
        return ids, labels, prob.reshape(len(ids), self.num_classes)

    def summarise(self, rows: list[dict[str, Any]], stage: str) -> dict[str, float]:
        _, labels, prob = self.subject_table(stage)
        report = classification_report(labels, prob, self.num_classes)
        values = {k: v for k, v in report.items() if k != "confusion_matrix"}
        values["loss"] = float(np.mean([r["loss"] for r in rows]))  # class-weighted cross-entropy
        if stage == "test":
            low, high = bootstrap_ci(labels, prob, "balanced_accuracy", n_boot=1000, seed=0)
            values.update(balanced_accuracy_ci_low=low, balanced_accuracy_ci_high=high)
        return values

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_outputs, self._val_outputs_step = [], None

    def gather_state(self, stage: str) -> None:
        if stage == "val":  # every rank's logits calibrate the checkpoint
            self._val_outputs = self.gathered(self._val_outputs)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self._val_outputs and not (self._trainer is not None and self.trainer.sanity_checking):
            self._val_outputs_step = self.global_step

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        # Only logits of the weights being saved calibrate them (not those of an earlier epoch).
        if self._val_outputs and self._val_outputs_step == self.global_step:
            logits = torch.cat([z for z, _ in self._val_outputs]).numpy()
            labels = torch.cat([y for _, y in self._val_outputs]).numpy()
            checkpoint["cogimg"]["calibration"] = {
                **calibration_summary(logits, labels), "fitted_on": "validation",
                "global_step": int(self.global_step)}
