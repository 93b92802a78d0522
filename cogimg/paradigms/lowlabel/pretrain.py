"""Self-supervised pretraining of a 3D network by masked-volume reconstruction.

Unlabelled patches are hidden in random cubes (``block`` voxels a side, a ``mask_ratio``
share of them set to 0 — the z-scored mean) and a registry segmentation network with
``out_channels = in_channels`` learns to restore the hidden voxels (mean squared error on
masked voxels only, as in masked autoencoders / SimMIM). Everything but the output layer —
the encoder and the decoder — then initialises a :class:`~cogimg.tasks.SegmentationTask`
with the same ``model`` and ``model_kwargs`` (a :class:`PretrainedWeights` add-on).

**Weights file** (``torch.save`` of plain tensors and lists, read with
``torch.load(weights_only=True)``)::

    {"format": "cogimg-pretrained", "version": 1, "method": "masked_reconstruction",
     "model": "unet", "model_kwargs": {...}, "in_channels": 2, "patch_size": [32, 32, 32],
     "state_dict": {...},            # every tensor except the output layer's
     "head_keys": ["model.2.conv.weight", ...],   # the output layer, left to the task
     "loss": [...]}                   # reconstruction loss per step
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cogimg import models
from cogimg.errors import UnusableFileError
from cogimg.io import atomic_path
from cogimg.tasks.addons import TrainingAddon

FORMAT = "cogimg-pretrained"
VERSION = 1


class PretrainedWeightsError(UnusableFileError):
    """A weights file that does not fit the task's network (names the file and the keys)."""


def random_block_mask(shape: Sequence[int], mask_ratio: float, block: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask ``(B, 1, X, Y, Z)`` hiding ≈ ``mask_ratio`` of ``block``³-voxel cubes."""
    b, _, *spatial = shape
    coarse = [max(1, -(-s // block)) for s in spatial]
    keep = torch.rand((b, 1, *coarse), generator=generator) < mask_ratio
    mask = keep.repeat_interleave(block, 2).repeat_interleave(block, 3).repeat_interleave(block, 4)
    return mask[..., :spatial[0], :spatial[1], :spatial[2]]


def masked_reconstruction_loss(model: nn.Module, image: torch.Tensor, mask_ratio: float = 0.6,
                               block: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """MSE between ``model(masked image)`` and ``image`` ``(B, C, X, Y, Z)`` on masked voxels."""
    mask = random_block_mask(image.shape, mask_ratio, block, generator).to(image.device)
    output = model(image.masked_fill(mask, 0.0))
    if output.ndim == image.ndim + 1:  # deep supervision heads: the full-resolution one
        output = output[:, 0]
    squared = (output.float() - image.float()) ** 2 * mask
    return squared.sum() / (mask.sum() * image.shape[1]).clamp(min=1)


def head_keys(model: str, in_channels: int, patch_size: Sequence[int], **model_kwargs) -> list[str]:
    """State-dict keys whose shape depends on ``out_channels`` (the output layer)."""
    shapes = [{k: v.shape for k, v in models.get(model, in_channels=in_channels, out_channels=k,
                                                  patch_size=patch_size, **model_kwargs)
               .state_dict().items()} for k in (in_channels, in_channels + 1)]
    return sorted(k for k in shapes[0] if shapes[0][k] != shapes[1][k])


def pretrain_encoder(batches: Iterable[dict], out: str | Path, model: str = "unet",
                     in_channels: int = 2, patch_size: Sequence[int] = (32, 32, 32),
                     model_kwargs: dict[str, Any] | None = None, steps: int = 200, lr: float = 1e-3,
                     mask_ratio: float = 0.6, block: int = 4, seed: int = 0,
                     device: str = "cpu") -> Path:
    """Pretrain ``model`` on ``batches`` (dicts with ``image`` ``(B, C, X, Y, Z)``, cycled until
    ``steps`` optimizer steps) and save the weights file ``out`` (see module doc). Returns it."""
    kwargs = dict(model_kwargs or {})
    torch.manual_seed(seed)
    network = models.get(model, in_channels=in_channels, out_channels=in_channels,
                         patch_size=tuple(patch_size), **kwargs).to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    while len(losses) < steps:
        seen = len(losses)
        for batch in batches:
            loss = masked_reconstruction_loss(network, batch["image"].to(device), mask_ratio,
                                              block, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            if len(losses) == steps:
                break
        if len(losses) == seen:
            raise ValueError("pretrain_encoder got no batches")
    skip = set(head_keys(model, in_channels, patch_size, **kwargs))
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items() if k not in skip}
    payload = {"format": FORMAT, "version": VERSION, "method": "masked_reconstruction",
               "model": model, "model_kwargs": kwargs, "in_channels": int(in_channels),
               "patch_size": [int(p) for p in patch_size], "state_dict": state,
               "head_keys": sorted(skip), "loss": losses}
    with atomic_path(out, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(out)


def load_pretrained(network: nn.Module, path: str | Path, model: str | None = None) -> dict:
    """Copy a weights file's tensors into ``network`` (a task's ``model``).

    Read with ``torch.load(weights_only=True)``. Every key of the network must come from the
    file except the file's ``head_keys`` (the task's own output layer); a key the network
    lacks, a key it misses or a shape that differs is a :class:`PretrainedWeightsError`
    naming them. Returns ``{"loaded": n, "skipped": head keys}``.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PretrainedWeightsError(f"pretrained_weights {path} does not exist") from None
    except Exception as exc:
        raise PretrainedWeightsError(f"{path}: cannot read weights file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise PretrainedWeightsError(f"{path}: not a cogimg pretrained-weights file (made by "
                                     "cogimg.paradigms.lowlabel.pretrain_encoder)")
    if model is not None and payload["model"] != model:
        raise PretrainedWeightsError(f"{path}: weights of model {payload['model']!r}, but the task "
                                     f"builds {model!r}")
    weights, own = payload["state_dict"], network.state_dict()
    head = set(payload.get("head_keys", []))
    unexpected = sorted(set(weights) - set(own))
    missing = sorted(set(own) - set(weights) - head)
    mismatched = sorted(f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
                        for k in set(weights) & set(own) if weights[k].shape != own[k].shape)
    if unexpected or missing or mismatched:
        parts = [f"{name} keys {keys[:8]}{' …' if len(keys) > 8 else ''} ({len(keys)})"
                 for name, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("shape-mismatched", mismatched)) if keys]
        raise PretrainedWeightsError(
            f"{path} does not fit the network: {'; '.join(parts)}. The file was made for model "
            f"{payload['model']!r} with model_kwargs {payload['model_kwargs']} and "
            f"{payload['in_channels']} input channel(s); use the same in the task")
    network.load_state_dict(weights, strict=False)
    return {"loaded": len(weights), "skipped": sorted(head & set(own))}


class PretrainedWeights(TrainingAddon):
    """Starts the task's network from a :func:`pretrain_encoder` weights file when fitting
    starts (checkpoints and ``cogimg predict`` never need the file again).

    Args:
        path: the weights file (read with ``torch.load(weights_only=True)``).
    """

    name = "pretrained"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = str(path)

    def config(self) -> dict[str, str]:
        return {"path": self.path}

    def setup(self, task, datamodule, stage: str) -> None:
        if stage == "fit":
            load_pretrained(task.model, self.path, task.hparams.model)


def reconstruction_error(network: nn.Module, image: torch.Tensor, **kwargs) -> float:
    """Masked-reconstruction loss of ``network`` on ``image`` without gradients (evaluation)."""
    with torch.no_grad():
        return float(masked_reconstruction_loss(network, image, **kwargs))


__all__ = ["PretrainedWeights", "PretrainedWeightsError", "head_keys", "load_pretrained", "masked_reconstruction_loss",
           "pretrain_encoder", "random_block_mask", "reconstruction_error"]
