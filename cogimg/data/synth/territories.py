"""Vascular territories of the brain from a real arterial-territory atlas.

The atlas is ``ArterialAtlas136`` (Liu et al. 2023, resampled by the SOOP demo project to a
157×189×136 grid at 1 mm, LAS, SPM-style MNI bounding box), shipped under
``cogimg/data/synth/assets/`` with its label table and licence. Its 32 labels are grouped into
the four families the synthetic cohort places strokes in:

========  ===========================================================  ================
family    atlas labels (odd = left, even = right)                        typical stroke
========  ===========================================================  ================
``ACA``   1–2 anterior cerebral artery                                 cortical, medial
``MCA``   7–16 frontal / parietal / temporal / occipital / insular MCA  cortical, large
``LS``    3–6 medial + lateral lenticulostriate, 23–24 ant. choroidal    lacunar, deep
``PCA``   17–22 temporal / occipital PCA, thalamoperforators            occipital, thalamic
``VB``    25–30 basilar, superior + inferior cerebellar                 brainstem (not placed)
========  ===========================================================  ================

Lookups go through world coordinates (mm), so any grid works: pass the MNI coordinate of
each subject voxel (``SubjectAnatomy.template_mm``) and get the atlas label behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Folder of the packaged atlas and lesion-shape library.
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
ATLAS_FILENAME = "ArterialAtlas136.nii.gz"

#: Family → atlas labels (both hemispheres; odd labels are left, even labels right).
FAMILY_LABELS: dict[str, tuple[int, ...]] = {
    "ACA": (1, 2),
    "MCA": (7, 8, 9, 10, 11, 12, 13, 14, 15, 16),
    "LS": (3, 4, 5, 6, 23, 24),
    "PCA": (17, 18, 19, 20, 21, 22),
    "VB": (25, 26, 27, 28, 29, 30),
}
#: Families the stroke effect places lesions in, with the share of strokes in each
#: (MCA infarcts dominate acute-stroke cohorts; lacunes are the next most common).
STROKE_FAMILY_WEIGHTS: dict[str, float] = {"MCA": 0.55, "LS": 0.2, "PCA": 0.15, "ACA": 0.1}
#: Deep territories (basal ganglia, internal capsule, thalamus): deep microbleeds go here.
DEEP_LABELS: tuple[int, ...] = (3, 4, 5, 6, 21, 22, 23, 24)

_LABEL_TO_FAMILY = {label: fam for fam, labels in FAMILY_LABELS.items() for label in labels}


@dataclass(frozen=True)
class ArterialAtlas:
    """Label volume of the arterial-territory atlas.

    Attributes:
        labels: uint8 (X, Y, Z) atlas labels, 0 = outside every territory.
        affine: (4, 4) voxel → MNI mm.
        names: label → full name from the atlas's label table.
    """

    labels: np.ndarray
    affine: np.ndarray
    names: dict[int, str]
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def labels_at(self, points_mm: np.ndarray) -> np.ndarray:
        """Atlas label (nearest voxel) at world points ``(..., 3)`` in mm; 0 outside the grid."""
        points = np.asarray(points_mm, dtype=np.float32)
        inverse = np.linalg.inv(self.affine).astype(np.float32)
        ijk = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64) + 1
        # The padded volume has a zero border, so clipping sends outside points to label 0.
        padded = self._padded()
        for axis in range(3):
            np.clip(ijk[..., axis], 0, padded.shape[axis] - 1, out=ijk[..., axis])
        flat = (ijk[..., 0] * padded.shape[1] + ijk[..., 1]) * padded.shape[2] + ijk[..., 2]
        return padded.ravel()[flat]

    def _padded(self) -> np.ndarray:
        if "padded" not in self._cache:
            # C order: labels_at indexes the flattened volume (nibabel arrays are Fortran-ordered).
            self._cache["padded"] = np.ascontiguousarray(np.pad(self.labels, 1))
        return self._cache["padded"]


def territory_name(family: str, side: str) -> str:
    """Canonical territory name, e.g. ``MCA_L``."""
    return f"{family}_{side}"


def family_and_side(label: int) -> tuple[str, str] | None:
    """``(family, side)`` of an atlas label, e.g. ``("MCA", "L")``; None for 0 and ventricles."""
    family = _LABEL_TO_FAMILY.get(int(label))
    if family is None:
        return None
    return family, ("L" if int(label) % 2 == 1 else "R")


def territory_labels(family: str, side: str) -> tuple[int, ...]:
    """Atlas labels of one family on one side (``side`` is ``"L"`` or ``"R"``)."""
    if family not in FAMILY_LABELS:
        raise KeyError(f"unknown territory family {family!r}; expected one of {sorted(FAMILY_LABELS)}")
    if side not in ("L", "R"):
        raise ValueError(f"territory side must be 'L' or 'R', got {side!r}")
    parity = 1 if side == "L" else 0
    return tuple(label for label in FAMILY_LABELS[family] if label % 2 == parity)


def _read_label_table(path: Path) -> dict[int, str]:
    names = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 3 or not fields[0].strip().isdigit():
            raise ValueError(f"{path}: line {line_no} is not 'id|acronym|name|group': {line!r}")
        names[int(fields[0])] = fields[2].strip()
    return names


@lru_cache(maxsize=4)
def load_atlas(path: str | Path | None = None) -> ArterialAtlas:
    """Load the arterial-territory atlas (cached per process).

    Args:
        path: a ``.nii.gz`` label volume with its ``.txt`` label table next to it; default:
            the copy packaged in ``cogimg/data/synth/assets``.

    Raises:
        FileNotFoundError: naming the missing atlas or label table.
    """
    import nibabel as nib

    atlas_path = Path(path) if path is not None else ASSETS_DIR / ATLAS_FILENAME
    table_path = atlas_path.with_name(atlas_path.name.removesuffix(".gz").removesuffix(".nii") + ".txt")
    for required in (atlas_path, table_path):
        if not required.is_file():
            raise FileNotFoundError(f"arterial atlas file not found: {required}")
    image = nib.load(atlas_path)
    labels = np.asarray(image.dataobj)
    if labels.ndim != 3 or labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"{atlas_path}: expected a 3-D label volume with labels 0..255")
    return ArterialAtlas(
        labels=labels.astype(np.uint8), affine=image.affine.copy(), names=_read_label_table(table_path)
    )


def sample_stroke_territory(rng: np.random.Generator) -> tuple[str, str]:
    """Draw ``(family, side)`` for a stroke: family by :data:`STROKE_FAMILY_WEIGHTS`, side 50/50."""
    families = list(STROKE_FAMILY_WEIGHTS)
    weights = np.array([STROKE_FAMILY_WEIGHTS[f] for f in families])
    family = families[rng.choice(len(families), p=weights / weights.sum())]
    return family, ("L" if rng.random() < 0.5 else "R")


def subject_atlas_labels(template_mm: np.ndarray, atlas: ArterialAtlas | None = None) -> np.ndarray:
    """Atlas labels on a subject grid: uint8 (X, Y, Z) from ``template_mm`` (X, Y, Z, 3) in mm."""
    return (atlas or load_atlas()).labels_at(template_mm)


class ParenchymaSampler:
    """Random and nearest-voxel lookups among one subject's parenchyma voxels.

    Parenchyma = inside ``brain_mask``, grey + white matter probability ≥ ``min_tissue`` and
    outside ``regions["ventricles"]`` when the anatomy has it. The atlas label behind each
    candidate is looked up once, so drawing a voxel in a territory costs a few microseconds.

    Args:
        anatomy: the subject (``SubjectAnatomy``).
        min_tissue: minimum GM + WM probability of a candidate voxel.
        atlas: atlas to use (default: the packaged one).
    """

    def __init__(self, anatomy, min_tissue: float = 0.5, atlas: ArterialAtlas | None = None):
        keep = anatomy.brain_mask & ((anatomy.tissue["gm"] + anatomy.tissue["wm"]) >= min_tissue)
        if "ventricles" in anatomy.regions:
            keep &= ~anatomy.regions["ventricles"]
        self.shape = anatomy.shape
        self.flat_index = np.flatnonzero(keep)
        if self.flat_index.size == 0:
            raise ValueError("subject anatomy has no parenchyma voxels (GM + WM inside brain_mask)")
        self.template_mm = anatomy.template_mm.reshape(-1, 3)[self.flat_index]
        self.labels = (atlas or load_atlas()).labels_at(self.template_mm)

    def voxel(self, flat: int) -> tuple[int, int, int]:
        """Voxel index ``(i, j, k)`` of a flat index into the subject grid."""
        return tuple(int(v) for v in np.unravel_index(flat, self.shape))

    def sample(self, rng: np.random.Generator, labels: tuple[int, ...] | None = None,
               allowed: np.ndarray | None = None) -> int | None:
        """Flat index of a uniformly drawn candidate, or None when no candidate qualifies.

        Args:
            labels: only candidates whose atlas label is in ``labels`` (None = any).
            allowed: bool per candidate (``len(flat_index)``) restricting the draw further.
        """
        keep = np.ones(self.flat_index.size, dtype=bool) if allowed is None else allowed.copy()
        if labels is not None:
            keep &= np.isin(self.labels, labels)
        pool = np.flatnonzero(keep)
        if pool.size == 0:
            return None
        return int(self.flat_index[pool[rng.integers(pool.size)]])

    def nearest(self, point_mm: np.ndarray) -> int:
        """Flat index of the candidate whose template coordinate is nearest ``point_mm`` (3,)."""
        distance2 = np.sum((self.template_mm - np.asarray(point_mm, dtype=np.float32)) ** 2, axis=1)
        return int(self.flat_index[np.argmin(distance2)])
