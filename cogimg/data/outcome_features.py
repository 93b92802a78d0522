"""Tabular features of an :class:`~cogimg.data.outcome.OutcomeCohort`, as named groups.

:func:`tabular_features` builds the ``(N, F)`` matrix that outcome models read from the
groups a config lists (``model.features`` in ``experiments/outcome/*.yaml``):

========================  ===========================================================  =====
group                     columns (per participant)                                     F
========================  ===========================================================  =====
``territories``           fraction of each atlas territory lesioned, in [0, 1]          T
``covariates``            the score table's covariates (e.g. age in years)              C
``log_volume``            ``log1p(lesion volume in mL)``                                1
``volume_ml``             lesion volume in mL (the SOOP demo's raw volume feature)      1
``laterality``            ``log1p`` left and right hemisphere lesion volume (mL) and    3
                          the left share of the lesion (0.5 without lesion)
``territory_x_volume``    each territory load × ``log1p(volume in mL)`` (a large        T
                          lesion in a territory weighs more than a small one)
``map``                   lesion fraction of every block of ``cohort.maps``             X'Y'Z'
========================  ===========================================================  =====

Hemispheres are read from the map's affine: blocks whose centre lies at world x < 0 mm
(RAS+, as NIfTI world coordinates are) are left, x > 0 right, x = 0 split in half. Every
group is a fixed function of one participant's own mask and row — nothing is fitted on the
cohort, so building features before cross-validation leaks nothing between folds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Feature groups of :func:`tabular_features`, in their documented order.
FEATURE_GROUPS = ("territories", "covariates", "log_volume", "volume_ml", "laterality",
                  "territory_x_volume", "map")


def hemisphere_volumes_ml(cohort) -> np.ndarray:
    """``(N, 2)`` lesion volume (mL) in the left and right hemisphere, from ``cohort.maps``."""
    n_x = cohort.maps.shape[1]
    centre_x = cohort.map_affine[0, 0] * np.arange(n_x) + cohort.map_affine[0, 3]
    if not np.allclose(cohort.map_affine[0, 1:3], 0) or not np.allclose(cohort.map_affine[1:3, 0], 0):
        raise ValueError("laterality needs a map grid whose first axis is world x (no rotation)")
    left = np.where(centre_x < 0, 1.0, np.where(centre_x == 0, 0.5, 0.0))
    voxels = cohort.maps.reshape(len(cohort), n_x, -1).sum(axis=2, dtype=np.float64)  # (N, X')
    voxel_ml = abs(np.linalg.det(cohort.mask_affine[:3, :3])) / 1000.0
    return np.stack([voxels @ left, voxels @ (1.0 - left)], axis=1) * voxel_ml


def tabular_features(cohort, groups: Sequence[str] = ("territories", "covariates", "log_volume",
                                                       "map")) -> tuple[np.ndarray, list[str]]:
    """``(N, F)`` float64 features and their names, in the order of ``groups`` (see the module
    table). Put ``map`` last: classical models read the leading ``n_tabular`` columns as
    tabular features and the rest as lesion-map voxels."""
    if unknown := [g for g in groups if g not in FEATURE_GROUPS]:
        raise ValueError(f"unknown feature group(s) {unknown}; choose from {list(FEATURE_GROUPS)}")
    needs_atlas = {"territories", "territory_x_volume"} & set(groups)
    if needs_atlas and not cohort.territory_names:
        raise ValueError(f"feature group(s) {sorted(needs_atlas)} need territory loads: load the "
                         "cohort with an atlas")
    log_volume = np.log1p(cohort.lesion_volume_ml)
    parts, names = [], []
    for group in groups:
        if group == "territories":
            parts.append(cohort.territory_load)
            names += list(cohort.territory_names)
        elif group == "covariates":
            parts.append(cohort.covariates)
            names += list(cohort.covariate_names)
        elif group == "log_volume":
            parts.append(log_volume[:, None])
            names.append("log_lesion_volume_ml")
        elif group == "volume_ml":
            parts.append(cohort.lesion_volume_ml[:, None])
            names.append("lesion_volume_ml")
        elif group == "laterality":
            hemi = hemisphere_volumes_ml(cohort)
            total = hemi.sum(axis=1)
            share = np.divide(hemi[:, 0], total, out=np.full(len(cohort), 0.5), where=total > 0)
            parts.append(np.c_[np.log1p(hemi), share])
            names += ["log_left_volume_ml", "log_right_volume_ml", "left_share"]
        elif group == "territory_x_volume":
            parts.append(cohort.territory_load * log_volume[:, None])
            names += [f"{t}_x_log_volume" for t in cohort.territory_names]
        else:
            parts.append(cohort.lesion_fraction.reshape(len(cohort), -1))
            names += [f"map_{i}" for i in range(parts[-1].shape[1])]
    return np.concatenate(parts, axis=1).astype(np.float64), names


__all__ = ["FEATURE_GROUPS", "hemisphere_volumes_ml", "tabular_features"]
