"""Multimodal fusion for classification: early, intermediate and late, plus a tabular branch.

Every model here maps a :class:`~cogimg.data.datamodules.VolumeDataModule` batch —
``image`` ``(B, M, X, Y, Z)`` (modalities as channels, zeros where one is missing),
``availability`` ``(B, M)`` (1 = the modality exists) and ``tabular`` ``(B, F)`` (clinical
features with missingness indicators) — to logits ``(B, K)``:

- ``single``: one modality into one backbone (the unimodal baseline);
- ``early``: the chosen modalities stacked as channels into one backbone;
- ``intermediate``: one encoder per modality (any registry backbone's
  ``forward_features``), fused by ``concat`` (feature concatenation), ``gated`` (gated
  attention over modalities, Ilse et al. 2018) or ``attention`` (a transformer layer across
  modality tokens, i.e. cross-modal attention), then a linear head;
- ``late``: one full classifier per modality; class probabilities (or logits) averaged;
- ``tabular``: the tabular MLP alone (the clinical-only baseline).

A tabular branch (MLP over the clinical features, ``torchvision.ops.MLP``) combines with
any of them: its features join the image features before the head (single, early,
intermediate) or it votes as one more classifier (late).

Missing modalities. *Training*: ``modality_dropout`` removes each available modality of a
sample with probability p (never all of them), so the model learns not to rely on any one.
*Any time*: intermediate and late fusion ignore a missing branch — the gated/attention
heads and late averaging take the mean over available branches only, and ``concat``
zeroes the missing branch's features and rescales the rest by ``M / available`` so the
linear head's output is ``M ×`` the mean of the available branches' contributions; early
fusion can only zero-fill the channel. Either way the model predicts, and warns once
(``UserWarning``) the first time it meets a missing modality.

Registry: each strategy is registered as ``fusion_<strategy>`` (tag ``classification``), so
``cogimg.models.get("fusion_late", backbone=..., modalities=..., ...)`` builds it like any
other network; :func:`build_fusion_model` takes the strategy as an argument (the
``ClassificationTask`` and ``RegressionTask`` select one with their ``fusion`` argument).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cogimg.models import classification as _classification  # noqa: F401  (registers backbones)
from cogimg.models import mil as _mil  # noqa: F401  (registers timm_2p5d)
from cogimg.models.classification import CLASSIFICATION
from cogimg.models.mil import GatedAttentionPooling
from cogimg.models.registry import available, get, register, spec

FUSIONS = ("single", "early", "intermediate", "late", "tabular")
#: registry name of each strategy's builder
FUSION_MODELS = {f"fusion_{fusion}": fusion for fusion in FUSIONS}
INTERMEDIATE_HEADS = ("concat", "gated", "attention")
LATE_COMBINES = ("prob", "logit")


class ModalityDropout(nn.Module):
    """Drop whole modalities at random during training, never all of a sample's.

    ``forward(availability (B, M)) -> (B, M)`` float: in training mode each available
    modality is kept with probability ``1 - p``; a sample left with none gets one of its
    available modalities back (chosen uniformly). Identity in eval mode or with ``p = 0``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, availability: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return availability
        available = availability > 0.5
        keep = available & (torch.rand(availability.shape, device=availability.device) >= self.p)
        emptied = available.any(dim=1) & ~keep.any(dim=1)
        if emptied.any():
            # Restore one available modality: the argmax of random scores over available ones.
            scores = torch.rand(availability.shape, device=availability.device).masked_fill(~available, -1.0)
            restore = torch.zeros_like(keep).scatter_(1, scores.argmax(dim=1, keepdim=True), True)
            keep = keep | (restore & emptied[:, None])
        return keep.to(availability.dtype)


class TabularBranch(nn.Module):
    """MLP on clinical features: ``(B, F)`` → ``(B, hidden[-1])`` (ReLU, dropout)."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (64, 32), dropout: float = 0.1) -> None:
        super().__init__()
        from torchvision.ops import MLP

        if in_features < 1:
            raise ValueError(f"the tabular branch needs at least one feature, got {in_features}")
        self.in_features = int(in_features)
        self.mlp = MLP(in_features, list(hidden), activation_layer=nn.ReLU, dropout=dropout)
        self.num_features = int(hidden[-1])

    def forward(self, tabular: torch.Tensor | None) -> torch.Tensor:
        if tabular is None:
            raise ValueError(f"this model has a tabular branch ({self.in_features} features) but the "
                             "batch has no 'tabular' entry; give the datamodule tabular columns")
        if tabular.ndim != 2 or tabular.shape[1] != self.in_features:
            raise ValueError(f"tabular branch: expected (B, {self.in_features}) features, got "
                             f"{tuple(tabular.shape)}; the datamodule's tabular columns changed?")
        # torchvision's MLP ends in a plain linear layer; the ReLU makes it a feature layer.
        return torch.relu(self.mlp(tabular))


class FusionModel(nn.Module):
    """Shared by all fusion models: channel selection, modality dropout, warn-once.

    Args:
        modalities: names of the batch's image channels, in order.
        channels: indices of the channels this model reads.
        tabular_features: ``F`` of the tabular branch (0 = none).
    """

    #: how the model treats a missing modality (in the warning)
    missing_policy = "ignored (mean over the available branches)"

    def __init__(self, modalities: Sequence[str], channels: Sequence[int], num_classes: int,
                 tabular_features: int = 0, modality_dropout: float = 0.0,
                 tabular_hidden: Sequence[int] = (64, 32)) -> None:
        super().__init__()
        self.modalities = tuple(modalities)
        self.channels = tuple(int(c) for c in channels)
        self.num_classes = int(num_classes)
        self.drop = ModalityDropout(modality_dropout)
        self.tabular = TabularBranch(tabular_features, tabular_hidden) if tabular_features else None
        self._warned_missing = False

    @property
    def used_modalities(self) -> tuple[str, ...]:
        return tuple(self.modalities[c] for c in self.channels)

    def select(self, image: torch.Tensor, availability: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The used channels ``(B, M', X, Y, Z)`` and their availability after dropout ``(B, M')``."""
        if image.ndim != 5 or image.shape[1] != len(self.modalities):
            raise ValueError(f"expected image (B, {len(self.modalities)}, X, Y, Z) with channels "
                             f"{list(self.modalities)}, got {tuple(image.shape)}")
        index = torch.tensor(self.channels, device=image.device)
        if availability is None:
            availability = torch.ones(image.shape[:2], device=image.device, dtype=image.dtype)
        used = availability.index_select(1, index).to(image.dtype)
        self._warn_if_missing(used)
        return image.index_select(1, index), self.drop(used)

    def _warn_if_missing(self, used: torch.Tensor) -> None:
        missing = used < 0.5
        if self._warned_missing or not missing.any():
            return
        self._warned_missing = True
        names = [m for m, miss in zip(self.used_modalities, missing.any(dim=0).tolist()) if miss]
        warnings.warn(f"{int(missing.any(dim=1).sum())} sample(s) lack modality {names}; "
                      f"{type(self).__name__} treats it as {self.missing_policy} "
                      "(warned once per model)", UserWarning, stacklevel=3)

    def tabular_features(self, tabular: torch.Tensor | None) -> list[torch.Tensor]:
        return [self.tabular(tabular)] if self.tabular is not None else []


def _classifier(backbone: str, in_channels: int, num_classes: int, input_shape, kwargs) -> nn.Module:
    """A classification registry model ``(B, in_channels, X, Y, Z)`` → ``(B, num_classes)``."""
    if backbone in FUSION_MODELS or CLASSIFICATION not in spec(backbone).tasks:
        raise ValueError(f"backbone {backbone!r} is not a classification model; choose one of "
                         f"{sorted(set(available(CLASSIFICATION)) - set(FUSION_MODELS))}")
    return get(backbone, in_channels=in_channels, num_classes=num_classes,
                      input_shape=tuple(input_shape), **dict(kwargs))


def _encoder(backbone: str, in_channels: int, num_classes: int, input_shape, kwargs) -> nn.Module:
    """A registry backbone without its head: ``forward`` returns ``(B, num_features)``."""
    net = _classifier(backbone, in_channels, num_classes, input_shape, kwargs)
    net.reset_classifier(0)
    return net


class EarlyFusion(FusionModel):
    """Modalities as channels of one backbone (``single`` = one channel)."""

    missing_policy = "zeros (early fusion zero-fills a missing channel)"

    def __init__(self, backbone: str, backbone_kwargs: Mapping[str, Any], input_shape, **base) -> None:
        super().__init__(**base)
        self.encoder = _encoder(backbone, len(self.channels), self.num_classes, input_shape, backbone_kwargs)
        width = self.encoder.num_features + (self.tabular.num_features if self.tabular else 0)
        self.head = nn.Linear(width, self.num_classes)

    def forward(self, image, availability=None, tabular=None) -> torch.Tensor:
        x, avail = self.select(image, availability)
        x = x * avail[:, :, None, None, None]  # modality dropout (missing ones are zero already)
        return self.head(torch.cat([self.encoder(x), *self.tabular_features(tabular)], dim=1))


class IntermediateFusion(FusionModel):
    """One encoder per modality; features fused by ``concat``, ``gated`` or ``attention``."""

    def __init__(self, backbone: str, backbone_kwargs: Mapping[str, Any], input_shape,
                 fusion_head: str = "concat", **base) -> None:
        super().__init__(**base)
        if fusion_head not in INTERMEDIATE_HEADS:
            raise ValueError(f"fusion_head={fusion_head!r}; choose one of {list(INTERMEDIATE_HEADS)}")
        self.fusion_head = fusion_head
        self.encoders = nn.ModuleList(_encoder(backbone, 1, self.num_classes, input_shape, backbone_kwargs)
                                      for _ in self.channels)
        dim = self.encoders[0].num_features
        if fusion_head == "gated":
            self.pool = GatedAttentionPooling(dim)
        elif fusion_head == "attention":
            self.modality_embedding = nn.Parameter(torch.zeros(len(self.channels), dim))
            heads = next(h for h in (4, 2, 1) if dim % h == 0)
            self.mixer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                                    batch_first=True, norm_first=True)
        image_width = dim * len(self.channels) if fusion_head == "concat" else dim
        self.head = nn.Linear(image_width + (self.tabular.num_features if self.tabular else 0),
                              self.num_classes)

    def forward(self, image, availability=None, tabular=None) -> torch.Tensor:
        x, avail = self.select(image, availability)
        feats = torch.stack([enc(x[:, i:i + 1]) for i, enc in enumerate(self.encoders)], dim=1)  # (B, M, D)
        present = avail > 0.5
        count = avail.sum(dim=1, keepdim=True).clamp_min(1.0)
        if self.fusion_head == "concat":
            fused = (feats * avail[..., None]).flatten(1) * (len(self.channels) / count)
        elif self.fusion_head == "gated":
            fused, _ = self.pool(feats, present)
        else:
            # A sample with nothing available attends over all tokens (finite), then pools to 0.
            padding = ~present & present.any(dim=1, keepdim=True)
            tokens = self.mixer(feats + self.modality_embedding, src_key_padding_mask=padding)
            fused = (tokens * avail[..., None]).sum(dim=1) / count
        return self.head(torch.cat([fused, *self.tabular_features(tabular)], dim=1))


class LateFusion(FusionModel):
    """One classifier per modality (+ the tabular one); mean of available branches' outputs.

    ``combine="prob"``: the output is ``log(mean of softmax probabilities)``, so softmax
    of it is the averaged probability; ``"logit"``: the mean of the logits. A sample with no
    branch available gets uniform probabilities.
    """

    def __init__(self, backbone: str, backbone_kwargs: Mapping[str, Any], input_shape,
                 combine: str = "prob", **base) -> None:
        super().__init__(**base)
        if combine not in LATE_COMBINES:
            raise ValueError(f"late_combine={combine!r}; choose one of {list(LATE_COMBINES)}")
        self.combine = combine
        self.classifiers = nn.ModuleList(
            _classifier(backbone, 1, self.num_classes, input_shape, backbone_kwargs) for _ in self.channels)
        self.tabular_head = nn.Linear(self.tabular.num_features, self.num_classes) if self.tabular else None

    def forward(self, image, availability=None, tabular=None) -> torch.Tensor:
        x, avail = self.select(image, availability)
        logits = [clf(x[:, i:i + 1]) for i, clf in enumerate(self.classifiers)]
        if self.tabular is not None:
            logits.append(self.tabular_head(self.tabular(tabular)))
            avail = torch.cat([avail, avail.new_ones(avail.shape[0], 1)], dim=1)
        stacked = torch.stack(logits, dim=1)  # (B, branches, K)
        count = avail.sum(dim=1, keepdim=True).clamp_min(1.0)
        if self.combine == "logit":
            return (stacked * avail[..., None]).sum(dim=1) / count
        prob = (stacked.softmax(dim=-1) * avail[..., None]).sum(dim=1) / count
        none = avail.sum(dim=1) == 0
        prob = torch.where(none[:, None], torch.full_like(prob, 1.0 / self.num_classes), prob)
        return prob.clamp_min(1e-8).log()


class TabularOnly(FusionModel):
    """The clinical baseline: the tabular MLP and a linear head (no image)."""

    def __init__(self, **base) -> None:
        super().__init__(**base)
        if self.tabular is None:
            raise ValueError("fusion='tabular' needs tabular features (use_tabular=True and "
                             "tabular columns in the datamodule)")
        self.head = nn.Linear(self.tabular.num_features, self.num_classes)

    def forward(self, image=None, availability=None, tabular=None) -> torch.Tensor:
        return self.head(self.tabular(tabular))


def build_fusion_model(
    fusion: str,
    *,
    backbone: str,
    modalities: Sequence[str],
    num_classes: int,
    input_shape: Sequence[int],
    use_modalities: Sequence[str] | None = None,
    tabular_features: int = 0,
    backbone_kwargs: Mapping[str, Any] | None = None,
    fusion_head: str = "concat",
    late_combine: str = "prob",
    modality_dropout: float = 0.0,
    tabular_hidden: Sequence[int] = (64, 32),
) -> FusionModel:
    """Build the fusion model called ``fusion`` (see the module docstring).

    Args:
        fusion: one of :data:`FUSIONS`.
        backbone: a classification registry name (``resnet10_3d``, ``vit_3d``, ``timm_2p5d`` …).
        modalities: names of the batch's image channels in order (the datamodule's).
        num_classes: logits per sample.
        input_shape: volume shape ``(X, Y, Z)`` in voxels.
        use_modalities: the modalities the model reads (``None`` = all); ``single`` needs one.
        tabular_features: ``F`` of the tabular branch; 0 = no tabular branch.
        backbone_kwargs: extra builder arguments (e.g. ``block_inplanes``).
        fusion_head: intermediate fusion: ``concat``, ``gated`` or ``attention``.
        late_combine: late fusion: average ``prob`` (probabilities) or ``logit``.
        modality_dropout: probability of dropping each available modality in training.
        tabular_hidden: widths of the tabular MLP.

    Raises:
        ValueError: unknown fusion/head, a modality not in ``modalities``, ``single`` with
            other than one modality, or a multi-branch fusion given one modality only.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion={fusion!r}; choose one of {list(FUSIONS)}")
    modalities = tuple(modalities)
    chosen = tuple(use_modalities) if use_modalities is not None else modalities
    if unknown := [m for m in chosen if m not in modalities]:
        raise ValueError(f"use_modalities {unknown} are not image channels of the batch {list(modalities)}")
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"use_modalities lists a modality twice: {list(chosen)}")
    if fusion == "single" and len(chosen) != 1:
        raise ValueError(f"fusion='single' reads one modality; use_modalities={list(chosen)} — pick "
                         "one, or use early/intermediate/late fusion for several")
    if fusion in ("intermediate", "late") and len(chosen) + bool(tabular_features) < 2:
        raise ValueError(f"fusion={fusion!r} fuses branches but has only {list(chosen)} and no "
                         "tabular branch; use fusion='single' or add modalities")
    base = {"modalities": modalities, "channels": [modalities.index(m) for m in chosen],
            "num_classes": num_classes, "tabular_features": int(tabular_features),
            "modality_dropout": modality_dropout, "tabular_hidden": tuple(tabular_hidden)}
    if fusion == "tabular":
        return TabularOnly(**{**base, "channels": []})
    image = {"backbone": backbone, "backbone_kwargs": dict(backbone_kwargs or {}),
             "input_shape": tuple(input_shape)}
    if fusion in ("single", "early"):
        return EarlyFusion(**image, **base)
    if fusion == "intermediate":
        return IntermediateFusion(**image, fusion_head=fusion_head, **base)
    return LateFusion(**image, combine=late_combine, **base)


# ----------------------------------------------------------------------------- registry
# One builder per strategy, with the keyword arguments that strategy reads; each is
# ``build_fusion_model`` with the strategy fixed (same checks, same model).
@register("fusion_single", task="fusion")
def fusion_single(*, backbone: str, modalities: Sequence[str], num_classes: int,
                  input_shape: Sequence[int], use_modalities: Sequence[str] | None = None,
                  tabular_features: int = 0, backbone_kwargs: Mapping[str, Any] | None = None,
                  tabular_hidden: Sequence[int] = (64, 32)) -> FusionModel:
    """Unimodal baseline: one modality into one classification backbone (+ tabular branch)."""
    return build_fusion_model("single", backbone=backbone, modalities=modalities,
                              num_classes=num_classes, input_shape=input_shape,
                              use_modalities=use_modalities, tabular_features=tabular_features,
                              backbone_kwargs=backbone_kwargs, tabular_hidden=tabular_hidden)


@register("fusion_early", task="fusion")
def fusion_early(*, backbone: str, modalities: Sequence[str], num_classes: int,
                 input_shape: Sequence[int], use_modalities: Sequence[str] | None = None,
                 tabular_features: int = 0, backbone_kwargs: Mapping[str, Any] | None = None,
                 modality_dropout: float = 0.0, tabular_hidden: Sequence[int] = (64, 32)) -> FusionModel:
    """Early fusion: modalities stacked as channels of one backbone (+ tabular branch)."""
    return build_fusion_model("early", backbone=backbone, modalities=modalities,
                              num_classes=num_classes, input_shape=input_shape,
                              use_modalities=use_modalities, tabular_features=tabular_features,
                              backbone_kwargs=backbone_kwargs, modality_dropout=modality_dropout,
                              tabular_hidden=tabular_hidden)


@register("fusion_intermediate", task="fusion")
def fusion_intermediate(*, backbone: str, modalities: Sequence[str], num_classes: int,
                        input_shape: Sequence[int], use_modalities: Sequence[str] | None = None,
                        tabular_features: int = 0, backbone_kwargs: Mapping[str, Any] | None = None,
                        fusion_head: str = "concat", modality_dropout: float = 0.0,
                        tabular_hidden: Sequence[int] = (64, 32)) -> FusionModel:
    """Intermediate fusion: one encoder per modality, concat / gated / attention head."""
    return build_fusion_model("intermediate", backbone=backbone, modalities=modalities,
                              num_classes=num_classes, input_shape=input_shape,
                              use_modalities=use_modalities, tabular_features=tabular_features,
                              backbone_kwargs=backbone_kwargs, fusion_head=fusion_head,
                              modality_dropout=modality_dropout, tabular_hidden=tabular_hidden)


@register("fusion_late", task="fusion")
def fusion_late(*, backbone: str, modalities: Sequence[str], num_classes: int,
                input_shape: Sequence[int], use_modalities: Sequence[str] | None = None,
                tabular_features: int = 0, backbone_kwargs: Mapping[str, Any] | None = None,
                late_combine: str = "prob", modality_dropout: float = 0.0,
                tabular_hidden: Sequence[int] = (64, 32)) -> FusionModel:
    """Late fusion: one classifier per modality, probabilities or logits averaged."""
    return build_fusion_model("late", backbone=backbone, modalities=modalities,
                              num_classes=num_classes, input_shape=input_shape,
                              use_modalities=use_modalities, tabular_features=tabular_features,
                              backbone_kwargs=backbone_kwargs, late_combine=late_combine,
                              modality_dropout=modality_dropout, tabular_hidden=tabular_hidden)


@register("fusion_tabular", task="fusion")
def fusion_tabular(*, modalities: Sequence[str], num_classes: int, tabular_features: int,
                   tabular_hidden: Sequence[int] = (64, 32)) -> FusionModel:
    """Clinical-only baseline: the tabular MLP and a linear head (no image)."""
    return build_fusion_model("tabular", backbone="", modalities=modalities,
                              num_classes=num_classes, input_shape=(),
                              tabular_features=tabular_features, tabular_hidden=tabular_hidden)


__all__ = ["FUSIONS", "FUSION_MODELS", "EarlyFusion", "FusionModel", "IntermediateFusion",
           "LateFusion", "ModalityDropout", "TabularBranch", "TabularOnly", "build_fusion_model",
           "fusion_early", "fusion_intermediate", "fusion_late", "fusion_single", "fusion_tabular"]
