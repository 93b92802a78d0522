"""Saliency maps out of the model grid: NIfTI on the input's native grid, PNG overlays.

A saliency map is computed on the preprocessed grid (canonical RAS, resampled, cropped).
:func:`saliency_to_native` puts it back on the native grid of the scan the user gave —
same shape, same affine (oblique and anisotropic included), its header — with the cache's
:func:`~cogimg.data.cache.invert_to_native` (linear interpolation, 0 outside the
preprocessed field of view), scaled to a maximum of 1. :func:`save_overlay_png` draws it
over that scan with nilearn (orthogonal slices through the saliency peak).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from cogimg.data.cache import invert_to_native
from cogimg.io import atomic_path, atomic_save_nifti


def normalise(saliency: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` ≥ 0 scaled to a maximum of 1 (an all-zero map stays zero), float32."""
    sal = saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)
    sal = np.clip(sal.astype(np.float32), 0.0, None)
    peak = float(sal.max()) if sal.size else 0.0
    return sal / peak if peak > 0 else sal


def saliency_to_native(saliency: torch.Tensor | np.ndarray, meta: dict | str | Path,
                       modality: str | None = None) -> nib.Nifti1Image:
    """Saliency ``(X, Y, Z)`` on the preprocessed grid → NIfTI on the native grid of
    ``modality`` (default: the reference modality) of the cache entry ``meta``; values in
    [0, 1] with the native maximum at 1."""
    image = invert_to_native(normalise(saliency), meta, is_label=False, modality=modality)
    # Normalised again on the native grid: interpolation lowers a sharp peak.
    data = normalise(np.asarray(image.dataobj, dtype=np.float32))
    out = nib.Nifti1Image(data, image.affine, header=image.header)
    out.header.set_data_dtype(np.float32)
    out.header["descrip"] = b"cogimg saliency, max-normalised"
    return out


def save_saliency_nifti(saliency: torch.Tensor | np.ndarray, meta: dict | str | Path, path: str | Path,
                        modality: str | None = None) -> nib.Nifti1Image:
    """:func:`saliency_to_native` written atomically to ``path``; returns the image."""
    image = saliency_to_native(saliency, meta, modality)
    atomic_save_nifti(image, path)
    return image


def save_overlay_png(saliency: nib.Nifti1Image, background: nib.Nifti1Image | str | Path,
                     path: str | Path, title: str = "", threshold: float = 0.2) -> Path:
    """Orthogonal slices of ``background`` with ``saliency`` (values in [0, 1]) drawn above
    ``threshold``, cut through the saliency peak; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from nilearn import plotting

    background = nib.load(background) if isinstance(background, (str, Path)) else background
    if background.ndim > 3:  # 4D scans: show the first volume
        background = background.slicer[..., 0]
    data = np.asarray(saliency.dataobj, dtype=np.float32)
    peak_vox = np.unravel_index(int(np.argmax(data)), data.shape)
    cut = nib.affines.apply_affine(saliency.affine, peak_vox)
    figure = plt.figure(figsize=(9, 3.2))
    try:
        plotting.plot_stat_map(saliency, bg_img=background, threshold=threshold, vmax=1.0,
                               cut_coords=tuple(float(c) for c in cut), display_mode="ortho",
                               cmap="hot", title=title or None, figure=figure, colorbar=True,
                               black_bg=True, draw_cross=False, annotate=True)
        with atomic_path(path, suffix=".png") as tmp:
            figure.savefig(tmp, dpi=110, facecolor="black")
    finally:
        plt.close(figure)
    return Path(path)
