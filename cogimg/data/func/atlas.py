"""A parcellation: a 3D integer label NIfTI plus a TSV naming each label and its network.

The TSV has a header and the columns ``index`` (label value in the image, ≥ 1), ``name``
and ``network`` (the large-scale network the region belongs to; ``n/a`` when unknown).
Label 0 is background. Every label in the image needs a row; a row whose label is absent
from the image is an error too (its time series would be empty).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd


class ParcellationError(ValueError):
    """A parcellation file that cannot be used (the message names the file)."""


@dataclass(frozen=True)
class Parcellation:
    """A label image and its region table.

    Attributes:
        image: 3D integer label NIfTI (0 = background).
        labels: TSV with columns ``index``, ``name``, ``network``.
        indices / names / networks: one entry per region, in TSV order.
    """

    image: Path
    labels: Path
    indices: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, image: str | Path, labels: str | Path) -> Parcellation:
        """Read and validate ``image`` and ``labels``.

        Raises:
            ParcellationError: a file is missing or unreadable, the image is not a 3D
                integer label map, the TSV lacks a column, or labels and table disagree.
        """
        image, labels = Path(image), Path(labels)
        data = _read_labels(image)
        if not labels.is_file():
            raise ParcellationError(f"{labels}: parcellation label table not found")
        try:
            table = pd.read_csv(labels, sep="\t", dtype={"name": str, "network": str})
        except Exception as exc:  # noqa: BLE001 -- pandas parser errors of every kind
            raise ParcellationError(f"{labels}: cannot read as TSV: {exc}") from None
        missing = [c for c in ("index", "name") if c not in table.columns]
        if missing:
            raise ParcellationError(f"{labels}: missing column(s) {missing}; found {list(table.columns)}")
        if "network" not in table.columns:
            table["network"] = "n/a"
        try:
            indices = [int(v) for v in table["index"]]
        except (TypeError, ValueError):
            raise ParcellationError(f"{labels}: column 'index' must hold integers") from None
        if len(set(indices)) != len(indices) or min(indices, default=1) < 1:
            raise ParcellationError(f"{labels}: indices must be unique integers ≥ 1, got {indices}")
        present = {int(v) for v in np.unique(data)} - {0}
        unnamed = sorted(present - set(indices))
        if unnamed:
            raise ParcellationError(f"{image}: label(s) {unnamed[:10]} have no row in {labels.name}")
        empty = sorted(set(indices) - present)
        if empty:
            raise ParcellationError(f"{labels}: label(s) {empty[:10]} do not occur in {image.name}")
        return cls(image, labels, indices, [str(n) for n in table["name"]],
                   [str(n) if isinstance(n, str) else "n/a" for n in table["network"]])

    def label_image(self) -> nib.Nifti1Image:
        """The label NIfTI, loaded."""
        return nib.load(self.image)

    def centroids_mm(self) -> np.ndarray:
        """(R, 3) float: world coordinates (mm) of each region's voxel centroid, TSV order."""
        img = self.label_image()
        data = np.asarray(img.dataobj).astype(np.int64)
        coords = np.zeros((len(self.indices), 3))
        for i, k in enumerate(self.indices):
            vox = np.argwhere(data == k).mean(0)
            coords[i] = img.affine[:3, :3] @ vox + img.affine[:3, 3]
        return coords

    def digest(self) -> str:
        """SHA-256 (16 hex) of the label image and table contents (a cache-key component)."""
        h = hashlib.sha256()
        for path in (self.image, self.labels):
            h.update(path.read_bytes())
        return h.hexdigest()[:16]


def _read_labels(image: Path) -> np.ndarray:
    if not image.is_file():
        raise ParcellationError(f"{image}: parcellation image not found")
    try:
        img = nib.load(image)
        data = np.asarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 -- nibabel raises many types on corrupt files
        raise ParcellationError(f"{image}: cannot read as NIfTI: {exc}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ParcellationError(f"{image}: a parcellation must be a 3D label image, got shape {data.shape}")
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)) or data.min() < 0:
        raise ParcellationError(f"{image}: labels must be non-negative integers")
    return data
