"""Contracts between the synthetic-cohort generator and its effect modules.

The generator builds one :class:`SubjectAnatomy` per subject (template + deformation), asks
each disease effect module for an effect on it, synthesises the contrasts, applies the
site's scanner model and writes everything. Effect modules never write files and never
touch another effect's output: they return what they changed and where.

All arrays are on the subject's voxel grid, shape ``(X, Y, Z)``, in RAS+ voxel order with
``affine`` mapping voxel indices to world mm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SubjectAnatomy:
    """One subject's healthy anatomy on its output grid.

    Attributes:
        affine: (4, 4) voxel → world (mm, RAS+).
        spacing_mm: isotropic voxel size in mm.
        tissue: tissue probability maps ``{"gm", "wm", "csf"}``, float32 (X, Y, Z) in [0, 1],
            summing to ≤ 1 (the rest is background).
        brain_mask: bool (X, Y, Z).
        template_mm: float32 (X, Y, Z, 3): for each subject voxel, the MNI152 coordinate (mm)
            it came from through the subject's deformation, so effects can be placed in
            template space (vascular territories, hippocampus, substantia nigra …).
        regions: named bool masks (X, Y, Z) in subject space, e.g. ``hippocampus_l``,
            ``putamen_r``, ``ventricles`` (filled by the anatomy module).
    """

    affine: np.ndarray
    spacing_mm: float
    tissue: dict[str, np.ndarray]
    brain_mask: np.ndarray
    template_mm: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.brain_mask.shape)

    @property
    def voxel_volume_ml(self) -> float:
        return float(self.spacing_mm**3 / 1000.0)


@dataclass
class Effect:
    """What one disease process did to one subject (returned by an effect module).

    Attributes:
        name: effect name (``stroke``, ``microbleeds``, ``atrophy``, ``pd``).
        gain: modality → float32 (X, Y, Z) multiplicative intensity map applied to the
            synthesised healthy contrast (1 = unchanged), partial-volume edges included.
        labels: derivatives pipeline name → dict with ``mask`` (uint8 binary),
            ``instances`` (int16, 0 = background, 1..N) and ``boxes`` (list of dicts as
            written to ``…_boxes.json``).
        maps: ground-truth maps written under ``derivatives/truth`` as
            ``desc-<key>_map.nii.gz`` (float32 (X, Y, Z), 0 where nothing changed).
        clinical: ``participants.tsv`` columns this effect determines (e.g. ``NIHSS``).
        info: JSON-serialisable description of what was done (per-lesion territory,
            volume in mL, age in days …) for ``…_effects.json``.
    """

    name: str
    gain: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, dict] = field(default_factory=dict)
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    clinical: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
