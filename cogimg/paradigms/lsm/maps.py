"""Lesion–symptom maps as NIfTI files and a figure (nilearn), on the lesion maps' grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cogimg.io import atomic_save_nifti


def save_maps(out: str | Path, lesion_matrix, result, affine: np.ndarray) -> dict[str, Path]:
    """Write ``t.nii.gz`` (t of the lesion term, 0 outside tested voxels),
    ``neglog10_p_fwe.nii.gz`` (−log10 FWE p), ``significant.nii.gz`` (uint8 mask at α) and
    ``lesion_count.nii.gz`` (subjects lesioned per voxel: the incidence map). Returns paths."""
    import nibabel as nib

    out = Path(out)
    volumes = {
        "t": lesion_matrix.to_volume(result.t),
        "neglog10_p_fwe": lesion_matrix.to_volume(-np.log10(result.p_fwe)),
        "significant": lesion_matrix.to_volume(result.significant).astype(np.uint8),
        "lesion_count": lesion_matrix.lesion_count.astype(np.int16),
    }
    paths = {}
    for name, data in volumes.items():
        image = nib.Nifti1Image(data, np.asarray(affine, float))
        paths[name] = atomic_save_nifti(image, out / f"{name}.nii.gz")
    return paths


def save_figure(path: str | Path, t_path: Path, count_path: Path, threshold: float,
                title: str = "") -> Path:
    """Two rows: lesion incidence and the FWE-thresholded t map (nilearn glass brains).

    Voxels with |t| below ``threshold`` are hidden; ``title`` defaults to naming the threshold.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting

    from cogimg.io import atomic_path

    fig, axes = plt.subplots(2, 1, figsize=(9, 6))
    plotting.plot_glass_brain(str(count_path), axes=axes[0], colorbar=True, cmap="viridis",
                              title="lesion incidence (subjects)", plot_abs=False)
    plotting.plot_glass_brain(str(t_path), axes=axes[1], colorbar=True, plot_abs=False,
                              threshold=max(threshold, 1e-6), cmap="RdBu_r",
                              title=title or f"t, FWE-thresholded at |t| ≥ {threshold:.2f}")
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
