"""Domain-adversarial and feature-alignment training added to any task by config.

A task that takes ``adaptation: {method: dann, weight: 0.1}`` (classification and
segmentation, through :class:`SiteAdaptationMixin`) owns a :class:`DomainAdaptation` module and
hands its training step to :meth:`DomainAdaptation.training_step`, which

1. reads each sample's site from the datamodule (``participants.tsv`` ``site``, by
   ``subject_id``), so no datamodule change is needed;
2. runs the task's own forward on the labelled source batch — concatenated with an
   unlabelled target-site batch when the datamodule provides one (``{"source": …,
   "target": …}``, see :class:`~cogimg.paradigms.adaptation.datamodule.TargetSiteVolumeDataModule`);
3. captures the encoder features at the input of ``feature_module`` (the task's default:
   ``head`` for classification, the features the classifier sees; the U-Net's bottleneck for
   segmentation): ``(B, D)``, or a spatial map ``(B, D, *S)``;
4. returns ``task loss (source only) + weight · domain loss``, where the domain loss is

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

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cogimg.paradigms.adaptation.grl import GradientReversal, dann_coefficient
from cogimg.paradigms.adaptation.losses import coral_loss, domain_alignment, mmd_loss
from cogimg.paradigms.options import checked_section

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


@contextlib.contextmanager
def captured_input(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, ``store["features"]`` is the last input of ``module``, ``(B, D)`` or
    ``(B, D, *S)``."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, args):
        store["features"] = args[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


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


class DomainAdaptation(nn.Module):
    """The domain loss of one task (see the module docstring).

    Args:
        config: the validated ``adaptation`` options.
        feature_dim: width ``D`` of the features at ``feature_module``'s input.
    """

    def __init__(self, config: AdaptationConfig, feature_dim: int) -> None:
        super().__init__()
        if config.sites is None:
            raise ValueError("DomainAdaptation needs the site list (filled in from the datamodule)")
        self.config = config
        self.site_index = {s: i for i, s in enumerate(config.sites)}
        self.site_of: dict[str, str] = {}
        if config.method == "dann":
            self.reversal = GradientReversal(1.0)
            self.site_classifier = nn.Sequential(
                nn.Linear(feature_dim, config.hidden), nn.ReLU(), nn.Linear(config.hidden, len(config.sites)))

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
        method = self.config.method
        if method == "dann":
            features = pooled(features)
            self.reversal.coeff = dann_coefficient(progress, self.config.gamma) if self.config.gamma else 1.0
            # Layer-normalised input: the cross-entropy the reversed gradient maximises is unbounded,
            # and on raw features the encoder "wins" by inflating them. Measured on the stroke U-Net
            # bottleneck (leave-site-out, held-out site-1): the site loss grew to ~1e7 at weight
            # 0.01 and out-of-site Dice fell from 0.43 to 0.17.
            logits = self.site_classifier(F.layer_norm(self.reversal(features), features.shape[-1:]))
            loss = F.cross_entropy(logits, domains)
            accuracy = float((logits.argmax(dim=1) == domains).float().mean())
            return loss, {"site_accuracy": accuracy, "grl_coeff": self.reversal.coeff}
        # Positions as samples, layer-normalised: measured on the stroke U-Net bottleneck
        # (leave-site-out, held-out site-1, batch_size 2), CORAL on two pooled vectors per domain
        # lowered its loss 600-fold by shrinking the features, and MMD's loss never fell.
        features, domains = position_samples(features, domains)
        features = F.layer_norm(features, features.shape[-1:], eps=1e-8)  # eps ≪ the features' variance
        fn = coral_loss if method == "coral" else mmd_loss
        return domain_alignment(features, domains, fn, minimum=2 if method == "coral" else 1), {}

    def training_step(self, task, batch: Mapping[str, Any]) -> torch.Tensor:
        """Task loss on the labelled source samples + weight · domain loss over the source and
        target samples — or, when the batch has ``source_uniform`` (patch training: source
        patches placed like the target's), over ``source_uniform`` and ``target`` in a second
        forward pass, so that the sites are compared on patches drawn the same way."""
        source, target = (batch["source"], batch.get("target")) if "source" in batch else (batch, None)
        aligned = batch.get("source_uniform") if target is not None else None
        module = task.model.get_submodule(self.config.feature_module)
        if aligned is None:  # one pass: the task's rows first, then the target's
            domain_batch = merge_batches(source, target) if target is not None else source
            with captured_input(module) as store:
                logits = task._logits(domain_batch)
        else:
            logits = task._logits(source)
            domain_batch = merge_batches(aligned, target)
            with captured_input(module) as store:
                task._logits(domain_batch)
        if "features" not in store:
            raise RuntimeError(f"adaptation.feature_module {self.config.feature_module!r} was not "
                               "called in the forward pass; name a module the model uses")
        label = source["label"].long()
        n = label.shape[0]
        task_loss = task._loss(logits[:n], label)
        domains = self.domains(domain_batch["subject_id"]).to(logits.device)
        domain_loss, logs = self.domain_loss(store["features"], domains, _progress(task))
        loss = task_loss + self.config.weight * domain_loss
        task.log("train/task_loss", task_loss, batch_size=n)
        task.log(f"train/{self.config.method}_loss", domain_loss, batch_size=len(domains))
        for key, value in logs.items():
            task.log(f"train/{key}", value, batch_size=len(domains))
        task.log("train/loss", loss, prog_bar=True, batch_size=n)
        return loss


class SiteAdaptationMixin:
    """``adaptation:`` for a task (a LightningModule with ``self.model``): the
    :class:`DomainAdaptation` module is built once the model and the site list are known — at
    fit setup from the datamodule's subjects, or at construction when the hyperparameters
    already hold the sites (a checkpoint). The task implements :meth:`default_feature_module`
    and :meth:`adaptation_feature_width`, and its ``_logits(batch)`` / ``_loss(logits, label)``
    serve :meth:`DomainAdaptation.training_step`."""

    def _init_adaptation(self, adaptation: Mapping[str, Any] | None) -> None:
        """Validate the option (before ``super().__init__``: errors name the key at fault)."""
        self._adaptation_config = AdaptationConfig.from_dict(adaptation) if adaptation is not None else None
        self._subject_sites: dict[str, str] | None = None

    def default_feature_module(self) -> str:
        """``adaptation.feature_module`` when the config names none."""
        raise NotImplementedError

    def adaptation_feature_width(self, module: nn.Module) -> int:
        """Width ``D`` of the features entering ``module`` (the site classifier's input)."""
        raise NotImplementedError

    def _build_adaptation(self) -> None:
        config = self._adaptation_config
        if config is None or self.model is None or self.domain_adaptation is not None:
            return
        if config.sites is None or config.feature_module is None:
            return  # filled in at setup from the datamodule's subjects
        try:
            module = self.model.get_submodule(config.feature_module)
        except AttributeError:
            raise ValueError(f"adaptation.feature_module {config.feature_module!r} is not a module of "
                             f"model {self.hparams.model!r}") from None
        self.domain_adaptation = DomainAdaptation(config, self.adaptation_feature_width(module))
        if self._subject_sites is not None:
            self.domain_adaptation.bind(self._subject_sites)

    def _setup_adaptation(self, datamodule) -> None:
        """Sites from ``datamodule`` and the default feature module, saved in the
        hyperparameters (so checkpoints rebuild the site classifier), then the module."""
        self._subject_sites = subject_sites(datamodule)
        config = self._adaptation_config
        if config.sites is None:
            config = replace(config, sites=tuple(sorted(set(self._subject_sites.values()))))
        if config.feature_module is None:
            config = replace(config, feature_module=self.default_feature_module())
        self._adaptation_config = config
        self.hparams.adaptation = config.to_dict()
        self._build_adaptation()
        self.domain_adaptation.bind(self._subject_sites)


def merge_batches(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Source and target samples in one batch (tensors concatenated along dim 0, lists joined);
    keys the target lacks (its ``label``) are kept from the source only."""
    merged: dict[str, Any] = {}
    for key, value in source.items():
        if key not in target:
            merged[key] = value
        elif torch.is_tensor(value):
            merged[key] = torch.cat([value, target[key].to(value.device)])
        elif isinstance(value, list):
            merged[key] = [*value, *target[key]]
        else:
            merged[key] = value
    return merged


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


def _progress(task) -> float:
    trainer = task._trainer
    if trainer is None:
        return 1.0
    total = max(1, int(trainer.estimated_stepping_batches))
    return min(1.0, task.global_step / total)
