"""Attention rollout (Abnar & Zuidema 2020) for MONAI 3D ViTs (``vit_3d``).

Per block the head-averaged attention ``A`` (N × N tokens) is mixed with the identity for
the residual path, ``Â = (A + I) / 2`` (rows renormalised), and the blocks are multiplied,
``R = Â_L ⋯ Â_1``. A token's relevance is how much the pooled output draws from it: the
classification-token row of ``R`` when the ViT has one, otherwise (cogimg's ``vit_3d``
mean-pools its tokens) the mean of the rows. The relevance of the patch grid is upsampled
trilinearly to the input. Rollout explains the representation, not one class.

MONAI's ``SABlock`` keeps the attention matrix when ``save_attn`` is set; this module sets
it for one forward pass and restores it. Blocks using flash attention (which never forms
the matrix) are refused with a clear error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _vit_parts(model: nn.Module):
    from monai.networks.blocks.patchembedding import PatchEmbeddingBlock
    from monai.networks.blocks.selfattention import SABlock
    from monai.networks.nets import ViT

    blocks = [m for m in model.modules() if isinstance(m, SABlock)]
    embeds = [m for m in model.modules() if isinstance(m, PatchEmbeddingBlock)]
    vits = [m for m in model.modules() if isinstance(m, ViT)]
    if not blocks or len(embeds) != 1:
        raise ValueError(f"{type(model).__name__}: attention rollout needs one MONAI ViT "
                         "(vit_3d); for CNNs use 'gradcam', 'ig' or 'occlusion'")
    if any(b.use_flash_attention for b in blocks):
        raise ValueError("attention rollout needs the attention matrices, which flash attention "
                         "never forms; build the ViT with use_flash_attention=False")
    has_cls = bool(vits and hasattr(vits[0], "cls_token"))
    return blocks, embeds[0], has_cls


def rollout_matrix(attentions: list[torch.Tensor]) -> torch.Tensor:
    """``R`` ``(B, N, N)`` from per-block attentions ``(B, heads, N, N)``, first block first."""
    result = None
    for att in attentions:
        mixed = att.float().mean(dim=1)
        mixed = mixed + torch.eye(mixed.shape[-1], device=mixed.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    if result is None:
        raise ValueError("no attention matrices to roll out")
    return result


def attention_rollout(scorer: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Rollout relevance ``(X, Y, Z)`` ≥ 0 on the grid of ``image`` ``(1, C, X, Y, Z)``."""
    blocks, embed, has_cls = _vit_parts(scorer)
    saved = [b.save_attn for b in blocks]
    try:
        for b in blocks:
            b.save_attn = True
        with torch.no_grad():
            scorer(image)
        attentions = [b.att_mat for b in blocks]
    finally:
        for b, flag in zip(blocks, saved):
            b.save_attn = flag
    rollout = rollout_matrix(attentions)[0]  # (N, N)
    relevance = rollout[0, 1:] if has_cls else rollout.mean(dim=0)
    conv = embed.patch_embeddings
    patch = conv.kernel_size if isinstance(conv, nn.Conv3d) else None
    if patch is None:
        raise ValueError("attention rollout supports MONAI ViTs with convolutional patch embedding")
    grid = [s // p for s, p in zip(image.shape[2:], patch)]
    if relevance.numel() != grid[0] * grid[1] * grid[2]:
        raise ValueError(f"{relevance.numel()} tokens do not match the patch grid {grid}")
    # MONAI flattens the patch grid (X, Y, Z) in C order: flatten(2) of the convolution output.
    cam = relevance.reshape(1, 1, *grid)
    return F.interpolate(cam, size=tuple(image.shape[2:]), mode="trilinear",
                         align_corners=False)[0, 0].clamp_min(0.0).cpu()
