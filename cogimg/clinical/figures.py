"""PNG figures of the clinical report (saliency overlays come from
:func:`cogimg.paradigms.explain.export.save_overlay_png`)."""

from __future__ import annotations

import base64
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from cogimg.io import atomic_path

#: Axial slices drawn at most in the lesion figure.
MAX_SLICES = 6


@contextmanager
def cheap_gc() -> Iterator[None]:
    """Exclude the objects alive now from garbage collection for the block.

    nilearn's plotting calls ``gc.collect()`` for every image it reads; with torch and the
    models loaded each full collection is slow, and together they took a large share of a
    case's figure time. ``gc.freeze`` moves the current objects to a permanent
    generation those collections skip; ``gc.unfreeze`` gives them back afterwards.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def lesion_cuts_mm(lesions: list[dict], max_slices: int = MAX_SLICES, min_gap_mm: float = 6.0) -> list[float]:
    """Axial (world z, mm) cuts through the largest lesions' centroids, ``min_gap_mm`` apart,
    inferior to superior."""
    cuts: list[float] = []
    for lesion in sorted(lesions, key=lambda les: -les["volume_ml"]):
        z = float(lesion["centroid_mm"][2])
        if all(abs(z - c) >= min_gap_mm for c in cuts):
            cuts.append(round(z, 1))
        if len(cuts) == max_slices:
            break
    return sorted(cuts)


def save_lesion_overlay_png(mask: nib.Nifti1Image, background: nib.Nifti1Image, lesions: list[dict],
                            path: str | Path, title: str = "") -> Path:
    """Axial slices of ``background`` through the largest lesions with ``mask`` in red
    (neurological view, patient L/R marked); written atomically. No title: the report has one."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from nilearn import plotting

    if background.ndim > 3:
        background = background.slicer[..., 0]
    cuts = lesion_cuts_mm(lesions)
    n_panels = max(len(cuts), 3) if cuts else MAX_SLICES
    figure = plt.figure(figsize=(1.9 * n_panels, 2.3))
    try:
        common = {"display_mode": "z", "figure": figure, "black_bg": True, "draw_cross": False,
                  "annotate": True, "title": title or None}
        if cuts:
            plotting.plot_roi(mask, bg_img=background, cut_coords=cuts, cmap=ListedColormap(["red"]),
                              alpha=0.55, colorbar=False, **common)
        else:  # nothing to mark: the scan itself, evenly spaced slices
            plotting.plot_anat(background, cut_coords=MAX_SLICES, dim=0, colorbar=False, **common)
        with atomic_path(path, suffix=".png") as tmp:
            figure.savefig(tmp, dpi=100, facecolor="black")
    finally:
        plt.close(figure)
    return Path(path)


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,…`` of a PNG file (for a self-contained HTML page)."""
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def native_summary(image: nib.Nifti1Image) -> dict:
    """Grid of a scan for the report: shape (voxels) and spacing (mm)."""
    zooms = np.linalg.norm(image.affine[:3, :3], axis=0)
    return {"shape": [int(s) for s in image.shape[:3]], "spacing_mm": [round(float(z), 3) for z in zooms]}


__all__ = ["cheap_gc", "lesion_cuts_mm", "native_summary", "png_data_uri", "save_lesion_overlay_png"]
