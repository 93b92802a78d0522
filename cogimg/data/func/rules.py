"""The rules ``cogimg check`` applies to resting-state BOLD runs, as :class:`Problem` records
(the same currency as :mod:`cogimg.data.validation`): 4D with a repetition time, enough volumes,
one confound row per volume, a parcellation on the run's grid."""

from __future__ import annotations

import numpy as np

from cogimg.data.validation import Problem, affine_difference


def check_bold_header(
    key: str, shape: tuple[int, ...], header_tr: float | None, sidecar_tr: float | None,
    min_volumes: int, subject_id: str, sidecar: str | None = None, tr_rtol: float = 0.01,
) -> list[Problem]:
    """A BOLD run must be 4D with a repetition time and at least ``min_volumes`` volumes.

    Args:
        key: the BOLD file (relative path).
        shape: its NIfTI shape.
        header_tr / sidecar_tr: TR in seconds from ``pixdim[4]`` / the JSON sidecar
            (``None`` when absent); both given must agree within ``tr_rtol``.
        sidecar: the sidecar's relative path (named in a disagreement).
    """
    problems = []
    if len(shape) != 4 or shape[3] < 2:
        problems.append(Problem("error", key, f"a BOLD run must be 4D (X, Y, Z, T) with T ≥ 2, "
                                f"got shape {tuple(shape)}", subject_id))
    elif shape[3] < min_volumes:
        problems.append(Problem("error", key, f"{shape[3]} volumes, fewer than the minimum "
                                f"{min_volumes}", subject_id))
    if header_tr is None and sidecar_tr is None:
        problems.append(Problem("error", key, "no repetition time: pixdim[4] is unset and no JSON "
                                "sidecar gives RepetitionTime", subject_id))
    elif header_tr is not None and sidecar_tr is not None and not np.isclose(
            header_tr, sidecar_tr, rtol=tr_rtol, atol=0.0):
        problems.append(Problem("error", key, f"repetition time {header_tr:g} s in the header but "
                                f"{sidecar_tr:g} s in {sidecar or 'the sidecar'}", subject_id))
    return problems


def check_confounds_rows(key: str, n_rows: int, n_volumes: int, subject_id: str) -> list[Problem]:
    """A confounds TSV needs one row per BOLD volume."""
    if n_rows == n_volumes:
        return []
    return [Problem("error", key, f"{n_rows} confound rows but the BOLD run has {n_volumes} "
                    "volumes", subject_id)]


def check_atlas_grid(
    atlas_key: str, atlas_shape: tuple[int, ...], atlas_affine: np.ndarray, bold_key: str,
    bold_shape: tuple[int, ...], bold_affine: np.ndarray, subject_id: str,
) -> list[Problem]:
    """The parcellation must lie on the BOLD run's grid (same (X, Y, Z) and affine)."""
    parts = []
    if tuple(atlas_shape[:3]) != tuple(bold_shape[:3]):
        parts.append(f"shape {tuple(atlas_shape[:3])} vs {tuple(bold_shape[:3])}")
    if affine := affine_difference(atlas_affine, bold_affine):
        parts.append(affine)
    if not parts:
        return []
    return [Problem("error", atlas_key, f"parcellation is not on the grid of {bold_key}: "
                    + "; ".join(parts) + " (resample the atlas to the BOLD space)", subject_id)]
