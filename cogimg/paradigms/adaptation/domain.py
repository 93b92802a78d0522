"""Domain-adversarial and feature-alignment training: a training add-on for any task.

``addons: [{class_path: cogimg.paradigms.adaptation.DomainAdaptation, init_args: {method: dann,
weight: 0.1}}]`` on a task (classification, segmentation, regression — any task whose protocol
names a ``feature_module``) adds, at every training step:

1. each sample's site, read from the datamodule (``participants.tsv`` ``site``, by
   ``subject_id``), so no datamodule change is needed;
2. the features at the input of ``feature_module`` (the task's default: ``head`` for
   classification, the features the classifier sees; the U-Net's bottleneck for
   segmentation), captured during the task's own forward pass: ``(B, D)`` or a spatial map
   ``(B, D, *S)``. When the datamodule serves a ``target`` stream (unlabelled target-site
   images, :class:`~cogimg.paradigms.adaptation.datamodule.TargetSiteVolumeDataModule`), its
   samples join that forward pass; with a ``source_uniform`` stream (patch training: source
   patches placed like the target's) the domain features come from a second pass over
   ``source_uniform`` and ``target``, so that the sites are compared on patches drawn alike;
3. ``weight · domain loss`` added to the task's loss (on the labelled samples only):

   - ``dann``: cross-entropy of a site classifier behind a gradient-reversal layer
     (coefficient on Ganin et al.'s schedule over training progress), on each sample's
     spatially averaged, layer-normalised features, so that the encoder cannot raise the loss
     by scaling them;
   - ``coral`` / ``mmd``: each site's features aligned with all other sites' features
     (:func:`~cogimg.paradigms.adaptation.losses.domain_alignment`). Every position of a
     spatial map is a sample (a batch of two 32³ patches gives 16 bottleneck vectors per
     domain, not two), and the vectors are layer-normalised, so that shrinking them cannot
     lower the loss (see :meth:`DomainAdaptation.domain_loss`).

Without target data this is multi-source domain generalisation (the training sites are
made indistinguishable); with it, unsupervised domain adaptation to the target site.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogimg.paradigms.adaptation.grl import GradientReversal, dann_coefficient
from cogimg.paradigms.adaptation.losses import coral_loss, domain_alignment, mmd_loss
from cogimg.paradigms.options import checked_section
from cogimg.tasks.addons import (
    TrainingAddon,
    TrainingStep,
    captured_input,
    merge_batches,
    training_progress,
)

METHODS = ("dann", "coral", "mmd")


@dataclass(frozen=True)
class AdaptationConfig:
    """Options of a task's ``adaptation:`` entry.

    Attributes:
        method: ``dann``, ``coral`` or ``mmd``.
        weight: multiplier of the domain loss added to the task loss.
        sites: site names in index order (``None`` = every site of the datamodule's
            subjects, sorted, filled in at setup and saved with the hyperparameters).
        feature_module: dotted name, inside the task's ``model``, of the module whose
            *input* are the features to align (``None`` = the task's default, filled in at
            setup: ``head`` for classification, the U-Net bottleneck for segmentation).
        hidden: width of the DANN site classifier's hidden layer.
        gamma: steepness of the DANN coefficient schedule (0 = constant coefficient 1).
    """

    method: str
    weight: float = 0.1
    sites: tuple[str, ...] | None = None
    feature_module: str | None = None
    hidden: int = 64
    gamma: float = 10.0

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> AdaptationConfig:
        """Validate a config mapping; errors name the ``adaptation`` key at fault."""
        values = checked_section(options, "adaptation", cls, METHODS, "{method: dann, weight: 0.1}")
        if float(values.get("weight", 0.1)) < 0:
            raise ValueError(f"adaptation.weight must be ≥ 0, got {values['weight']}")
        if values.get("sites") is not None:
            values["sites"] = tuple(str(s) for s in values["sites"])
            if len(values["sites"]) < 2 or len(set(values["sites"])) != len(values["sites"]):
                raise ValueError(f"adaptation.sites must list ≥ 2 distinct sites, got {list(values['sites'])}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sites"] = list(self.sites) if self.sites is not None else None
        return out


def pooled(features: torch.Tensor) -> torch.Tensor:
    """``(N, D, *S)`` → ``(N, D)``, averaged over positions; ``(N, D)`` as it is."""
    return features.flatten(2).mean(dim=2) if features.ndim > 2 else features


def position_samples(features: torch.Tensor, domains: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position of a map as a sample: ``(N, D, *S)`` and domains ``(N,)`` →
    ``(N·|S|, D)`` and ``(N·|S|,)``; ``(N, D)`` unchanged."""
    if features.ndim == 2:
        return features, domains
    positions = features.flatten(2)
    return positions.transpose(1, 2).reshape(-1, features.shape[1]), domains.repeat_interleave(positions.shape[2])


class DomainAdaptation(TrainingAddon):
    """The domain loss of one task, as a training add-on (see the module docstring).

    Args: as :class:`AdaptationConfig` (``method``, ``weight``, ``sites``, ``feature_module``,
    ``hidden``, ``gamma``); ``sites`` and ``feature_module`` are filled in when fitting starts
    and saved with the task's hyperparameters, so checkpoints rebuild the site classifier.
    """

    optional_streams = ("target", "source_uniform")

    def __init__(self, method: str = "dann", weight: float = 0.1, sites: list[str] | None = None,
                 feature_module: str | None = None, hidden: int = 64, gamma: float = 10.0) -> None:
        super().__init__()
        self.options = AdaptationConfig.from_dict(
            {"method": method, "weight": weight, "sites": sites, "feature_module": feature_module,
             "hidden": hidden, "gamma": gamma})
        self.name = method
        self.site_index: dict[str, int] = {}
        self.site_of: dict[str, str] = {}
        self.reversal = GradientReversal(1.0)
        self.site_classifier: nn.Module | None = None

    def config(self) -> dict[str, Any]:
        return self.options.to_dict()

    def setup(self, task, datamodule, stage: str) -> None:
        """Sites from the datamodule's subjects and the task's feature module (when not given),
        then the site classifier; at fit, the ``subject_id → site`` map."""
        options = self.options
        site_of = subject_sites(datamodule) if stage == "fit" and datamodule is not None else None
        if options.sites is None:
            if site_of is None:
                raise ValueError("adaptation: the sites are unknown (no datamodule to read them from)")
            options = replace(options, sites=tuple(sorted(set(site_of.values()))))
        if options.feature_module is None:
            options = replace(options, feature_module=task.feature_module())
        try:
            task.model.get_submodule(options.feature_module)
        except AttributeError:
            raise ValueError(f"adaptation.feature_module {options.feature_module!r} is not a module "
                             f"of model {task.hparams.model!r}") from None
        self.options = options
        self.site_index = {s: i for i, s in enumerate(options.sites)}
        if options.method == "dann" and self.site_classifier is None:
            self.build(task.feature_width(options.feature_module))
            self.site_classifier.to(next(task.model.parameters()).device)
        if site_of is not None:
            self.bind(site_of)

    def build(self, feature_dim: int) -> None:
        """The DANN site classifier on ``feature_dim``-wide features (sites must be known)."""
        if self.options.sites is None:
            raise ValueError("adaptation: the sites must be known to build the site classifier")
        self.site_index = {s: i for i, s in enumerate(self.options.sites)}
        if self.options.method == "dann":
            self.site_classifier = nn.Sequential(
                nn.Linear(feature_dim, self.options.hidden), nn.ReLU(),
                nn.Linear(self.options.hidden, len(self.options.sites)))

    # ---------------------------------------------------------------- sites
    def bind(self, site_of: Mapping[str, str]) -> None:
        """Set the ``subject_id → site`` map (from :func:`subject_sites`); sites must be known."""
        if unknown := sorted(set(site_of.values()) - set(self.site_index)):
            raise ValueError(f"adaptation: site(s) {unknown} are not in adaptation.sites "
                             f"{list(self.site_index)}; a checkpoint's site classifier cannot "
                             "score new sites — retrain or list them")
        self.site_of = dict(site_of)

    def domains(self, subject_ids) -> torch.Tensor:
        """Site indices ``(B,)`` of a batch's ``subject_id`` list."""
        if not self.site_of:
            raise RuntimeError("DomainAdaptation.bind() must run (task setup) before training")
        try:
            return torch.tensor([self.site_index[self.site_of[str(s)]] for s in subject_ids])
        except KeyError as err:
            raise KeyError(f"adaptation: subject {err.args[0]!r} has no site in the datamodule") from None

    # ---------------------------------------------------------------- loss
    def domain_loss(self, features: torch.Tensor, domains: torch.Tensor,
                    progress: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, logs)`` for features ``(N, D)`` or ``(N, D, *S)`` and site indices ``(N,)``."""
        method = self.options.method
        if method == "dann":
            features = pooled(features)
            self.reversal.coeff = dann_coefficient(progress, self.options.gamma) if self.options.gamma else 1.0
            # Layer-normalised input: the cross-entropy the reversed gradient maximises is unbounded,
            # and on raw features the encoder "wins" by inflating them (the site loss explodes and
            # the task collapses; studies/leave_site_out.yaml).
            logits = self.site_classifier(F.layer_norm(self.reversal(features), features.shape[-1:]))
            loss = F.cross_entropy(logits, domains)
            accuracy = float((logits.argmax(dim=1) == domains).float().mean())
            return loss, {"site_accuracy": accuracy, "grl_coeff": self.reversal.coeff}
        # Positions as samples, layer-normalised: with two pooled vectors per domain (small patch
        # batches) CORAL lowers its loss by shrinking the features, and MMD's loss does not fall.
        features, domains = position_samples(features, domains)
        features = F.layer_norm(features, features.shape[-1:], eps=1e-8)  # eps ≪ the features' variance
        fn = coral_loss if method == "coral" else mmd_loss
        return domain_alignment(features, domains, fn, minimum=2), {}

    # ---------------------------------------------------------------- training step
    def before_forward(self, step: TrainingStep) -> None:
        target = step.streams.get("target")
        if "source_uniform" in step.streams and target is not None:
            return  # domain features from a second pass (training_loss)
        if target is not None:
            step.add_samples(target)
        step.capture(self.options.feature_module)

    def training_loss(self, step: TrainingStep) -> tuple[torch.Tensor, dict[str, float]]:
        """``weight · domain loss`` over the step's labelled (+ target) samples, or over
        ``source_uniform`` and ``target`` when the datamodule serves both."""
        target, aligned = step.streams.get("target"), step.streams.get("source_uniform")
        if target is not None and aligned is not None:
            domain_batch = merge_batches(aligned, target)
            module = step.task.model.get_submodule(self.options.feature_module)
            with captured_input(module) as store:
                step.task.logits(domain_batch)
            features = store["features"]
        else:
            domain_batch, features = step.forward_batch, step.captured[self.options.feature_module]
        domains = self.domains(domain_batch["subject_id"]).to(features.device)
        loss, logs = self.domain_loss(features, domains, training_progress(step.task))
        return self.options.weight * loss, logs


def subject_sites(datamodule) -> dict[str, str]:
    """``subject_id → site`` over every subset of a prepared cogimg datamodule."""
    subjects = getattr(datamodule, "subjects", None)
    if not subjects:
        raise ValueError("adaptation needs a prepared cogimg datamodule (its subjects carry "
                         "participants.tsv's 'site')")
    out = {}
    for subset in subjects.values():
        for s in subset:
            if "site" not in s or str(s["site"]) in ("", "n/a"):
                raise ValueError(f"adaptation: subject {s['subject_id']} has no 'site' in participants.tsv")
            out[str(s["subject_id"])] = str(s["site"])
    return out
