"""Stroke lesion shapes: a library of real lesions, and procedural blobs as a fallback.

The library ``assets/lesion_shapes.npz`` holds single connected components (26-connectivity)
of real acute-stroke masks from the Stroke Outcome Optimization Project (SOOP, BSD-2 demo
release), cropped to their bounding box at 1 mm in RAS voxel order and bit-packed. Components
are drawn stratified over log-volume so that lacunes (< 1 mL) are as well represented as
territorial infarcts (100+ mL). Each entry keeps its source volume (mL), the arterial territory
its voxels mostly fall in (``territories.FAMILY_LABELS``) and its centroid in MNI mm.

Rebuild it (needs the SOOP masks, see ``../shared/data/README.md``)::

    python -m cogimg.data.synth.lesion_shapes ../shared/data/soop_masks \
        cogimg/data/synth/assets/lesion_shapes.npz

``.npz`` layout (loaded with ``allow_pickle=False``): ``bits`` uint8 (concatenated
``np.packbits`` of every mask), ``bit_offsets`` int64 (N + 1), ``shapes`` int32 (N, 3),
``volume_ml`` float32 (N), ``family`` / ``side`` / ``source`` unicode (N),
``centroid_mm`` float32 (N, 3), ``spacing_mm`` float32 scalar.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from cogimg.data.boxes import label_components
from cogimg.data.synth.territories import ASSETS_DIR, family_and_side
from cogimg.io import atomic_path

#: Packaged shape library; when this file is absent, :func:`load_library` returns None and
#: the stroke effect falls back to :func:`procedural_blob`.
LIBRARY_PATH = ASSETS_DIR / "lesion_shapes.npz"


@dataclass
class LesionShape:
    """One binary lesion shape.

    Attributes:
        mask: bool (X, Y, Z) in RAS voxel order, cropped to the lesion.
        spacing_mm: isotropic voxel size of ``mask`` in mm.
        volume_ml: lesion volume in mL.
        family: arterial territory family (``MCA`` …) or ``""`` if unknown (procedural).
        side: ``"L"``/``"R"`` or ``""``.
        source: where it came from (``sub-1001#2`` = component 2 of sub-1001, or ``procedural``).
        centroid_mm: MNI coordinate (3,) of its centroid, None if procedural.
    """

    mask: np.ndarray
    spacing_mm: float
    volume_ml: float
    family: str = ""
    side: str = ""
    source: str = "procedural"
    centroid_mm: np.ndarray | None = None


@dataclass
class ShapeLibrary:
    """Bit-packed lesion masks with their metadata (see the module docstring for fields)."""

    bits: np.ndarray
    bit_offsets: np.ndarray
    shapes: np.ndarray
    volume_ml: np.ndarray
    family: np.ndarray
    side: np.ndarray
    source: np.ndarray
    centroid_mm: np.ndarray
    spacing_mm: float
    _unpacked: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.volume_ml)

    def get(self, index: int) -> LesionShape:
        """Shape ``index`` (its mask is unpacked once and kept)."""
        if index not in self._unpacked:
            start, stop = self.bit_offsets[index], self.bit_offsets[index + 1]
            n = int(np.prod(self.shapes[index]))
            mask = np.unpackbits(self.bits[start:stop], count=n).astype(bool)
            self._unpacked[index] = mask.reshape(self.shapes[index])
        return LesionShape(
            mask=self._unpacked[index], spacing_mm=self.spacing_mm,
            volume_ml=float(self.volume_ml[index]), family=str(self.family[index]),
            side=str(self.side[index]), source=str(self.source[index]),
            centroid_mm=self.centroid_mm[index].astype(np.float64),
        )

    def choose(self, rng: np.random.Generator, volume_ml: float, family: str | None = None) -> LesionShape:
        """Draw a shape whose volume is close to ``volume_ml`` (log scale), preferring ``family``.

        Weights are ``exp(-(Δ ln V / 0.35)²)``, ×4 for the same territory family, so the
        resampling scale stays within ≈ ×0.7–1.4 of the real lesion where the library allows.
        """
        delta = np.log(self.volume_ml) - np.log(max(volume_ml, 1e-4))
        weights = np.exp(-((delta / 0.35) ** 2)) + 1e-12
        if family is not None:
            weights = weights * np.where(self.family == family, 4.0, 1.0)
        return self.get(int(rng.choice(len(weights), p=weights / weights.sum())))


def _read_npz(path: Path) -> ShapeLibrary:
    required = ("bits", "bit_offsets", "shapes", "volume_ml", "family", "side", "source",
                "centroid_mm", "spacing_mm")
    with np.load(path, allow_pickle=False) as data:
        missing = [key for key in required if key not in data.files]
        if missing:
            raise ValueError(f"{path}: lesion shape library lacks arrays {missing}")
        arrays = {key: data[key] for key in required}
    n = len(arrays["volume_ml"])
    if arrays["bit_offsets"].shape != (n + 1,) or arrays["shapes"].shape != (n, 3):
        raise ValueError(f"{path}: bit_offsets/shapes do not match {n} lesions")
    arrays["spacing_mm"] = float(arrays["spacing_mm"])
    return ShapeLibrary(**arrays)


@lru_cache(maxsize=4)
def _load_cached(path: str) -> ShapeLibrary:
    return _read_npz(Path(path))


def load_library(path: str | Path | None = None) -> ShapeLibrary | None:
    """The lesion-shape library at ``path`` (default :data:`LIBRARY_PATH`), cached per process.

    Returns None when the file does not exist (callers fall back to procedural blobs);
    a file that exists but is malformed raises ``ValueError`` naming it.
    """
    resolved = Path(path) if path is not None else LIBRARY_PATH
    if not resolved.is_file():
        return None
    return _load_cached(str(resolved.resolve()))


def procedural_blob(rng: np.random.Generator, volume_ml: float) -> LesionShape:
    """An irregular lesion of ``volume_ml`` mL: a noisy ellipsoid, thresholded and connected.

    The field ``1 - ellipsoid_distance + 0.35 * smooth_noise`` is thresholded at the quantile
    that keeps the requested number of voxels; the largest 26-connected component is kept.
    Voxels are 1 mm for small lesions and coarser for large ones (grid ≤ ~40³).
    """
    radius_mm = (3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    spacing = max(1.0, 3.2 * radius_mm / 36.0)
    half = int(np.ceil(1.6 * radius_mm / spacing)) + 2
    axes = np.arange(-half, half + 1, dtype=np.float32) * spacing
    x, y, z = np.meshgrid(axes, axes, axes, indexing="ij")
    semi_axes = radius_mm * np.exp(rng.normal(0.0, 0.25, size=3))
    semi_axes *= radius_mm / np.prod(semi_axes) ** (1.0 / 3.0)  # keep the ellipsoid's volume
    distance = np.sqrt((x / semi_axes[0]) ** 2 + (y / semi_axes[1]) ** 2 + (z / semi_axes[2]) ** 2)
    noise = ndimage.gaussian_filter(rng.standard_normal(distance.shape).astype(np.float32),
                                    sigma=max(1.0, 0.4 * radius_mm / spacing))
    field_ = 1.0 - distance + 0.35 * noise / max(float(noise.std()), 1e-6)
    n_keep = int(np.clip(round(volume_ml * 1000.0 / spacing**3), 1, field_.size))
    threshold = np.partition(field_.ravel(), -n_keep)[-n_keep]
    components, n = label_components(field_ >= threshold, connectivity=26)
    if n > 1:
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == np.argmax(sizes)
    else:
        mask = components > 0
    return LesionShape(mask=mask, spacing_mm=spacing, volume_ml=float(mask.sum() * spacing**3 / 1000.0))


def _components(path: Path, atlas_labels: np.ndarray, min_voxels: int):
    """(component id, voxel count, dominant atlas label) of one mask; mask in RAS order."""
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(path))
    data = np.asarray(image.dataobj)
    if data.shape != atlas_labels.shape:
        raise ValueError(f"{path}: grid {data.shape} differs from the atlas grid {atlas_labels.shape}")
    components, n = label_components(data > 0, connectivity=26)
    sizes = np.bincount(components.ravel(), minlength=n + 1)
    found = []
    for comp in np.flatnonzero(sizes >= min_voxels):
        if comp == 0:
            continue
        dominant = np.bincount(atlas_labels[components == comp], minlength=33)
        dominant[0] = 0
        found.append((int(comp), int(sizes[comp]), int(np.argmax(dominant)) if dominant.any() else 0))
    return image, components, found


def build_library(soop_dir: str | Path, out: str | Path, n_shapes: int = 160, seed: int = 0,
                  min_voxels: int = 8, max_ml: float = 250.0, n_bins: int = 16) -> dict:
    """Build the lesion-shape library from SOOP masks (``soop_dir/lesions/*.nii.gz``).

    Every 26-connected component with ≥ ``min_voxels`` voxels and ≤ ``max_ml`` mL is a
    candidate (a few SOOP masks exceed 600 mL, more than a hemisphere); ``n_shapes``
    are drawn stratified over ``n_bins`` log-volume bins (bins with too few candidates give
    all of them, the rest of the quota is drawn from the remaining candidates at random).
    The file is written atomically. Returns a summary (count, volume range, size in bytes).
    """
    import nibabel as nib

    soop_dir, out = Path(soop_dir), Path(out)
    mask_paths = sorted((soop_dir / "lesions").glob("*.nii.gz"))
    if not mask_paths:
        raise FileNotFoundError(f"no lesion masks found under {soop_dir / 'lesions'}")
    atlas_image = nib.as_closest_canonical(nib.load(soop_dir / "ArterialAtlas136.nii.gz"))
    atlas_labels = np.asarray(atlas_image.dataobj).astype(np.uint8)
    candidates = []  # (path index, component id, n voxels, dominant label)
    for index, path in enumerate(mask_paths):
        image, _, found = _components(path, atlas_labels, min_voxels)
        voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000.0
        candidates.extend((index, comp, size, label) for comp, size, label in found
                          if size * voxel_ml <= max_ml)
    rng = np.random.default_rng(seed)
    log_volume = np.log([c[2] for c in candidates])
    bins = np.minimum(((log_volume - log_volume.min()) / np.ptp(log_volume) * n_bins).astype(int), n_bins - 1)
    chosen = []
    for b in range(n_bins):
        members = np.flatnonzero(bins == b)
        chosen.extend(rng.choice(members, size=min(members.size, n_shapes // n_bins), replace=False))
    rest = np.setdiff1d(np.arange(len(candidates)), chosen)
    chosen.extend(rng.choice(rest, size=min(rest.size, n_shapes - len(chosen)), replace=False))
    chosen = sorted(chosen, key=lambda i: candidates[i][2])

    packed, shapes, volumes, families, sides, sources, centroids = [], [], [], [], [], [], []
    for i in chosen:
        path_index, comp, size, label = candidates[i]
        image, components, _ = _components(mask_paths[path_index], atlas_labels, min_voxels)
        crop = ndimage.find_objects(components)[comp - 1]
        mask = components[crop] == comp
        voxel_size = float(np.cbrt(abs(np.linalg.det(image.affine[:3, :3]))))
        centre_vox = np.array([s.start for s in crop]) + np.array(ndimage.center_of_mass(mask))
        family_side = family_and_side(label) or ("", "")
        packed.append(np.packbits(mask.ravel()))
        shapes.append(mask.shape)
        volumes.append(size * voxel_size**3 / 1000.0)
        families.append(family_side[0])
        sides.append(family_side[1])
        sources.append(f"{mask_paths[path_index].name.split('_')[0]}#{comp}")
        centroids.append(image.affine[:3, :3] @ centre_vox + image.affine[:3, 3])
    offsets = np.concatenate([[0], np.cumsum([p.size for p in packed])]).astype(np.int64)
    arrays = {
        "bits": np.concatenate(packed), "bit_offsets": offsets, "shapes": np.array(shapes, dtype=np.int32),
        "volume_ml": np.array(volumes, dtype=np.float32), "family": np.array(families, dtype="<U3"),
        "side": np.array(sides, dtype="<U1"), "source": np.array(sources, dtype="<U24"),
        "centroid_mm": np.array(centroids, dtype=np.float32), "spacing_mm": np.float32(voxel_size),
    }
    # A file handle, because given a name without ``.npz`` numpy would append one.
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return {"n_shapes": len(chosen), "n_candidates": len(candidates),
            "volume_ml": [float(min(volumes)), float(max(volumes))], "bytes": out.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the stroke lesion-shape library from SOOP masks.")
    parser.add_argument("soop_dir", type=Path, help="folder with lesions/*.nii.gz and ArterialAtlas136.nii.gz")
    parser.add_argument("out", type=Path, help="output .npz (e.g. cogimg/data/synth/assets/lesion_shapes.npz)")
    parser.add_argument("--n-shapes", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_library(args.soop_dir, args.out, n_shapes=args.n_shapes, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
