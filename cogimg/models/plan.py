"""Fingerprint → plan, the nnU-Net v2 way: spacing, patch, batch, U-Net topology, normalisation.

The rules follow nnU-Net v2's ``ExperimentPlanner`` (3d_fullres) and
``get_pool_and_conv_props``:

* **target spacing** (:func:`target_spacing`): the per-axis median of the reference
  modality's spacings; when the coarsest axis is more than ``anisotropy_threshold`` (3)
  times coarser than the finest other axis *and* has fewer than a third of the voxels of
  the smallest other axis, it takes the 10th percentile of that axis' spacings instead
  (never finer than the other axes).
* **patch size and topology** (:func:`pool_and_strides`, :func:`plan_from_fingerprint`):
  start from a patch of 256³ voxels' worth of millimetres, shaped like the target spacing's
  isotropic field of view and clipped to the median resampled shape; pool an axis while its
  feature map stays ≥ ``min_feature_map`` (4) voxels (≥ 3 × 4 when it is the only axis
  left) and its spacing is within 2× of the finest, so thick-slice axes are skipped by the
  first strides; pad the patch to the total stride. While the training memory of
  ``min_batch_size`` (2) patches exceeds the budget, shrink the axis that is largest
  relative to the median shape by one stride multiple and recompute the topology.
* **batch size**: as many patches as the budget holds, capped so that one batch covers at
  most 5 % of the dataset's voxels, at least ``min_batch_size``.
* **memory** (:func:`training_memory`): *measured on the chosen registry network*, not
  modelled: the network is built on PyTorch's ``meta`` device (no allocation, no compute)
  and one training-mode forward pass of one patch is run under
  ``torch.autograd.graph.saved_tensors_hooks``; the bytes of every distinct storage saved
  for backward are the activation memory per sample (it matches a real CPU forward pass
  byte for byte). Training memory = parameters × (1 weight + 1 gradient + optimiser
  states) + batch × activations, in float32 (bf16 autocast needs less). Transient buffers
  of the backward pass, the allocator's fragmentation and cuDNN workspaces are not
  counted: the plan uses ``usable_fraction`` (0.8) of the budget for them.
* **normalisation** per modality (:func:`normalisation`): modality keys starting ``CT``
  get nnU-Net's CT scheme (clip to the fingerprint's foreground 0.5–99.5 percentiles,
  z-score with the foreground mean/std); MRI gets a per-image z-score, inside the non-zero
  mask when cropping to it removes ≥ 25 % of the voxels (nnU-Net's ``use_mask_for_norm``).
* **foreground oversampling**: nnU-Net forces ``oversample_foreground`` (⅓) of the patches
  onto a foreground class and places the rest uniformly; as cogimg's label sampler draws
  patch centres per label value, that is ``P(c) = ⅓ / n_fg + ⅔ · freq(c)`` for foreground
  classes and ``⅔ · freq(0)`` for background.

:func:`plan_yaml` renders the keys an experiment config takes (``data.init_args`` spacing,
patch, batch, label probabilities; ``model.init_args`` network and its ``model_kwargs``), so
``cogimg fit --config experiments/stroke/seg_dynunet.yaml --config plan.yaml`` applies it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cogimg.io import atomic_write_text

#: Networks the planner can size (the U-Net family with per-level strides).
NETWORKS = ("dynunet", "unet")
#: Fewest levels (full-resolution stem included) each network can be built with.
MIN_LEVELS = {"dynunet": 3, "unet": 2}
GIB = 2**30


@dataclass(frozen=True)
class PlannerConfig:
    """Planner defaults (nnU-Net's values where it has one).

    Attributes:
        cpu_memory_gb: training memory budget (GiB) when no GPU is present and none is given.
        usable_fraction: share of the budget the measured memory may take.
        anisotropy_threshold: spacing ratio above which an axis counts as thick.
        min_feature_map: smallest feature-map edge (voxels) a pooling may leave.
        initial_patch_voxels: voxels of the starting patch before clipping (256³).
        min_batch_size / max_dataset_fraction: batch-size floor; a batch's voxels stay
            under this fraction of the dataset's.
        oversample_foreground: fraction of patches forced onto foreground.
        base_filters / max_filters: U-Net widths, doubling per level up to the cap;
            ``None``: nnU-Net's 32 / 320 with a GPU, cogimg's CPU sizes 8 / 128 without.
        optimizer_states: per-parameter state tensors of the optimiser (AdamW: 2).
        deep_supervision: ``dynunet`` with deep supervision (nnU-Net's default).
    """

    cpu_memory_gb: float = 8.0
    usable_fraction: float = 0.8
    anisotropy_threshold: float = 3.0
    min_feature_map: int = 4
    initial_patch_voxels: int = 256**3
    min_batch_size: int = 2
    max_dataset_fraction: float = 0.05
    oversample_foreground: float = 0.33
    base_filters: int | None = None
    max_filters: int | None = None
    optimizer_states: int = 2
    deep_supervision: bool = True


# --------------------------------------------------------------------------- spacing
def target_spacing(spacings: np.ndarray, shapes: np.ndarray, threshold: float = 3.0) -> np.ndarray:
    """nnU-Net's full-resolution target spacing (mm, ``(3,)``) from per-subject
    ``spacings`` (N, 3) mm and ``shapes`` (N, 3) voxels (see the module docstring)."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.percentile(spacings, 50, axis=0)
    size = np.percentile(shapes, 50, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(3) if a != worst]
    aniso_spacing = target[worst] > threshold * max(target[others])
    aniso_voxels = size[worst] * threshold < min(size[others])
    if aniso_spacing and aniso_voxels:
        thick = float(np.percentile(spacings[:, worst], 10))
        if thick < max(target[others]):
            thick = max(max(target[others]), thick) + 1e-5
        target[worst] = thick
    return target


def resampled_shapes(spacings: np.ndarray, shapes: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Shapes (N, 3) after resampling to ``spacing``, by the preprocessing's rule
    (:func:`cogimg.data.transforms.grid_at_spacing`: ``floor(shape · old / new)``)."""
    ratio = np.asarray(spacings, float) / np.asarray(spacing, float)
    return np.maximum(np.floor(np.asarray(shapes, float) * ratio + 1e-3), 1).astype(int)


# --------------------------------------------------------------------------- topology
def pool_and_strides(spacing: Sequence[float], patch_size: Sequence[int], min_feature_map: int = 4
                     ) -> tuple[list[list[int]], list[int], list[int]]:
    """nnU-Net's ``get_pool_and_conv_props`` (3D, no cap on the number of poolings).

    Returns ``(strides, patch, divisor)``: per-level strides ``[[1, 1, 1], [2, 2, 1], …]``
    (the first level is the full-resolution stem), ``patch_size`` padded up to a multiple
    of ``divisor``, the per-axis product of the strides.
    """
    current_spacing = [float(s) for s in spacing]
    current_size = [float(s) for s in patch_size]
    strides = [[1, 1, 1]]
    while True:
        valid = [a for a in range(3) if current_size[a] >= 2 * min_feature_map]
        if not valid:
            break
        finest = min(current_spacing[a] for a in valid)
        valid = [a for a in valid if current_spacing[a] / finest < 2]
        if len(valid) == 1 and current_size[valid[0]] < 3 * min_feature_map:
            break
        if not valid:
            break
        stride = [1, 1, 1]
        for a in valid:
            stride[a] = 2
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
        strides.append(stride)
    divisor = [math.prod(s[a] for s in strides) for a in range(3)]
    patch = [int(math.ceil(p / d) * d) for p, d in zip(patch_size, divisor, strict=True)]
    return strides, patch, divisor


def network_kwargs(network: str, strides: list[list[int]], base_filters: int, max_filters: int,
                   deep_supervision: bool = True) -> dict:
    """The registry kwargs of ``network`` for a topology (``strides`` from
    :func:`pool_and_strides`): ``dynunet`` filters/strides (+ deep supervision), ``unet``
    channels/strides (isotropic strides only)."""
    filters = [min(base_filters * 2**i, max_filters) for i in range(len(strides))]
    compact = [s[0] if len(set(s)) == 1 else list(s) for s in strides]
    if network == "dynunet":
        kwargs: dict = {"filters": filters, "strides": compact}
        levels = len(strides)
        if deep_supervision and levels >= 3:
            kwargs |= {"deep_supervision": True, "deep_supr_num": min(2, levels - 2)}
        else:
            kwargs["deep_supervision"] = False
        return kwargs
    if network == "unet":
        if any(isinstance(s, list) for s in compact[1:]):
            raise ValueError(f"unet takes isotropic strides only; the plan needs {compact[1:]} "
                             "(thick slices): plan for --network dynunet")
        if len(strides) < 2:
            raise ValueError("unet needs at least one downsampling; the patch is too small")
        return {"channels": filters, "strides": compact[1:]}
    raise ValueError(f"cannot plan network {network!r}; plannable: {list(NETWORKS)}")


# --------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class MemoryEstimate:
    """Training memory of a network, bytes: ``fixed`` (weights, gradients, optimiser states)
    and ``per_sample`` (activations saved for backward by one patch)."""

    fixed: int
    per_sample: int

    def total(self, batch_size: int) -> int:
        return self.fixed + batch_size * self.per_sample


def saved_activation_bytes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Bytes of the distinct storages a training-mode forward of a zero ``input_shape``
    ``(B, C, X, Y, Z)`` saves for backward (parameters excluded) or returns.

    ``model`` may live on the ``meta`` device (then nothing is allocated or computed) or on
    a real one; it is switched to training mode.
    """
    model.train()
    device = next(model.parameters()).device
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}
    keep: list[torch.Tensor] = []  # keeps storages alive so their keys stay unique

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in params:
            saved[storage._cdata] = storage.nbytes()
            keep.append(tensor)
        return tensor

    inputs = torch.zeros(tuple(int(s) for s in input_shape), device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        output = model(inputs)
    for out in output if isinstance(output, (list, tuple)) else [output]:
        saved[out.untyped_storage()._cdata] = out.untyped_storage().nbytes()
    return sum(saved.values())


def training_memory(network: str, in_channels: int, out_channels: int, patch_size: Sequence[int],
                    kwargs: dict, optimizer_states: int = 2) -> MemoryEstimate:
    """Measure :class:`MemoryEstimate` of registry ``network`` at ``patch_size`` (built on
    the ``meta`` device; float32)."""
    from cogimg.models.registry import get

    with torch.device("meta"):
        model = get(network, in_channels=in_channels, out_channels=out_channels,
                    patch_size=tuple(int(p) for p in patch_size), **kwargs)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    per_sample = saved_activation_bytes(model, (1, in_channels, *patch_size))
    return MemoryEstimate(param_bytes * (2 + optimizer_states), per_sample)


def device_memory_gb(memory_gb: float | None, config: PlannerConfig) -> tuple[float, str]:
    """The budget (GiB) and where it comes from: ``memory_gb`` when given, else the GPU's
    total memory when CUDA is available, else ``config.cpu_memory_gb``."""
    if memory_gb is not None:
        if memory_gb <= 0:
            raise ValueError(f"memory budget must be positive, got {memory_gb} GiB")
        return float(memory_gb), "given"
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GIB, "gpu"
    return config.cpu_memory_gb, "cpu default"


# --------------------------------------------------------------------------- plan
def plan_from_fingerprint(fingerprint: dict, *, network: str = "dynunet",
                          memory_gb: float | None = None, out_channels: int | None = None,
                          config: PlannerConfig | None = None) -> dict:
    """The plan (JSON-ready dict) for ``fingerprint`` (:mod:`cogimg.data.fingerprint`).

    Args:
        network: registry name, one of :data:`NETWORKS`.
        memory_gb: training memory budget in GiB (default: :func:`device_memory_gb`).
        out_channels: classes including background (default: label values seen, at least 2).
        config: planner defaults.

    Raises ``ValueError`` when even the smallest patch does not fit the budget.
    """
    config = config or PlannerConfig()
    if network not in NETWORKS:
        raise ValueError(f"cannot plan network {network!r}; plannable: {list(NETWORKS)}")
    budget_gb, budget_source = device_memory_gb(memory_gb, config)
    gpu = budget_source == "gpu" or (memory_gb is not None and torch.cuda.is_available())
    base = config.base_filters or (32 if gpu else 8)
    cap = config.max_filters or (320 if gpu else 128)
    usable = budget_gb * GIB * config.usable_fraction
    modalities = list(fingerprint["modalities"])
    ref = fingerprint["modalities"][fingerprint["reference"]]
    classes = sorted(int(c) for c in fingerprint["class_frequencies"])
    n_out = out_channels or max(2, max(classes) + 1)
    spacing = target_spacing(ref["spacings_mm"], ref["shapes"], config.anisotropy_threshold)
    median_shape = np.median(resampled_shapes(ref["spacings_mm"], ref["shapes"], spacing), 0)

    inv = 1 / spacing
    start = np.round(inv * (config.initial_patch_voxels / np.prod(inv)) ** (1 / 3)).astype(int)
    start = np.minimum(start, median_shape).astype(int)
    strides, patch, divisor = pool_and_strides(spacing, start, config.min_feature_map)

    def measure(patch, strides) -> MemoryEstimate:
        kwargs = network_kwargs(network, strides, base, cap, config.deep_supervision)
        return training_memory(network, len(modalities), n_out, patch, kwargs,
                               config.optimizer_states)

    def too_small(why: str) -> ValueError:
        return ValueError(f"{network} does not fit {budget_gb:.3g} GiB ({why}): give more "
                          "memory (--memory-gb) or use smaller base_filters")

    memory = measure(patch, strides)
    if memory.fixed >= usable:
        raise too_small(f"its weights, gradients and optimiser states alone take "
                        f"{memory.fixed / GIB:.3g} GiB")
    shrinks = 0
    while memory.total(config.min_batch_size) > usable:
        axis = int(np.argsort(np.asarray(patch) / median_shape)[-1])
        trial = list(patch)
        trial[axis] -= divisor[axis]
        _, _, trial_divisor = pool_and_strides(spacing, trial, config.min_feature_map)
        patch[axis] -= trial_divisor[axis]
        strides, patch, divisor = pool_and_strides(spacing, patch, config.min_feature_map)
        if min(patch) < 1 or len(strides) < MIN_LEVELS[network]:
            raise too_small(f"not even at patch {trial}")
        memory = measure(patch, strides)
        shrinks += 1
    fits = int((usable - memory.fixed) // memory.per_sample)
    dataset_voxels = float(np.prod(median_shape)) * fingerprint["n_subjects"]
    cap_5pct = round(dataset_voxels * config.max_dataset_fraction / np.prod(patch, dtype=float))
    batch = max(min(fits, cap_5pct), config.min_batch_size)
    kwargs = network_kwargs(network, strides, base, cap, config.deep_supervision)
    return {
        "network": network,
        "preset": fingerprint.get("preset"),
        "data_root": fingerprint["root"],
        "spacing_mm": [round(float(s), 6) for s in spacing],
        "median_shape": [int(s) for s in median_shape],
        "patch_size": [int(p) for p in patch],
        "batch_size": int(batch),
        "strides": strides,
        "model_kwargs": kwargs,
        "label_probabilities": label_probabilities(fingerprint["class_frequencies"],
                                                   config.oversample_foreground),
        "normalisation": {m: normalisation(m, fingerprint) for m in modalities},
        "memory": {
            "budget_gib": round(budget_gb, 3), "budget_source": budget_source,
            "usable_gib": round(usable / GIB, 3),
            "fixed_gib": round(memory.fixed / GIB, 4),
            "per_sample_gib": round(memory.per_sample / GIB, 4),
            "planned_gib": round(memory.total(batch) / GIB, 3),
            "batch_that_fits": fits, "batch_cap_5pct": int(cap_5pct), "patch_shrinks": shrinks,
            "method": "saved-for-backward storages of one meta-device training forward, float32",
        },
        "config": asdict(replace(config, base_filters=base, max_filters=cap)),
    }


def label_probabilities(frequencies: dict, oversample: float = 0.33) -> dict[int, float]:
    """Patch-centre probability per label value: ``oversample`` split over the foreground
    classes plus ``1 - oversample`` spread by voxel frequency (see the module docstring)."""
    freq = {int(k): float(v) for k, v in frequencies.items()}
    foreground = [c for c in freq if c > 0]
    if not foreground:
        return {0: 1.0}
    probs = {c: (1 - oversample) * f + (oversample / len(foreground) if c > 0 else 0.0)
             for c, f in sorted(freq.items())}
    return {c: round(p, 4) for c, p in probs.items()}


def normalisation(modality: str, fingerprint: dict) -> dict:
    """nnU-Net's normalisation choice for ``modality`` (see the module docstring); the
    non-zero crop is measured on the reference modality and holds for every channel."""
    stats = fingerprint["modalities"][modality]["foreground_intensity"]
    if modality.lower().startswith("ct"):
        return {"scheme": "ct", "clip": [stats["percentile_0_5"], stats["percentile_99_5"]],
                "mean": stats["mean"], "std": stats["std"]}
    fractions = [s["nonzero_fraction"] for s in fingerprint["subjects"]]
    use_mask = bool(np.median(fractions) < 0.75)
    return {"scheme": "zscore", "use_mask_for_norm": use_mask, "clip": None}


# --------------------------------------------------------------------------- output
def plan_config(plan: dict) -> dict:
    """The experiment-config keys of ``plan`` (``data:`` / ``model:`` ``init_args``)."""
    data = {"data_root": plan["data_root"], "spacing_mm": plan["spacing_mm"],
            "patch_size": plan["patch_size"], "batch_size": plan["batch_size"],
            "label_probabilities": plan["label_probabilities"]}
    if plan.get("preset"):
        data["preset"] = plan["preset"]
    if all(n["scheme"] == "zscore" for n in plan["normalisation"].values()):
        data["normalization"] = "zscore"
    return {"data": {"init_args": data},
            "model": {"init_args": {"model": plan["network"], "model_kwargs": plan["model_kwargs"]}}}


def plan_yaml(plan: dict) -> str:
    """``plan.yaml``: :func:`plan_config` with a header saying how to apply it."""
    import yaml

    memory = plan["memory"]
    header = [
        (f"# cogimg plan for {plan['data_root']} ({plan['network']}, budget "
        f"{memory['budget_gib']} GiB, {memory['budget_source']}); details in plan.json."),
        "# Apply after an experiment config (its model_kwargs are replaced as a whole):",
        f"#   cogimg fit --config experiments/stroke/seg_{plan['network']}.yaml --config plan.yaml",
    ]
    body = yaml.safe_dump(plan_config(plan), sort_keys=False, default_flow_style=None)
    return "\n".join(header) + "\n" + body


def write_plan(plan: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``plan.yaml`` and ``plan.json`` into ``out_dir`` atomically; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return (atomic_write_text(out / "plan.yaml", plan_yaml(plan)),
            atomic_write_text(out / "plan.json", json.dumps(plan, indent=1) + "\n"))


def format_plan(plan: dict) -> str:
    """A few lines summarising a plan."""
    memory = plan["memory"]
    norm = ", ".join(f"{m}: {n['scheme']}" + (" (non-zero mask)" if n.get("use_mask_for_norm")
                                               else "") for m, n in plan["normalisation"].items())
    return "\n".join([
        f"Plan ({plan['network']}):",
        f"  spacing {plan['spacing_mm']} mm, median resampled shape {plan['median_shape']}",
        f"  patch {plan['patch_size']}, batch {plan['batch_size']}, strides {plan['strides']}",
        f"  model_kwargs {plan['model_kwargs']}",
        (f"  memory: budget {memory['budget_gib']} GiB ({memory['budget_source']}), usable "
        f"{memory['usable_gib']}, planned {memory['planned_gib']} (fixed {memory['fixed_gib']} "
        f"+ {memory['per_sample_gib']} per patch; fits {memory['batch_that_fits']}, 5% cap "
        f"{memory['batch_cap_5pct']}, patch shrinks {memory['patch_shrinks']})"),
        f"  normalisation: {norm}",
        f"  patch-centre probabilities: {plan['label_probabilities']}",
    ])
