"""Bounding boxes of lesions: from masks, to and from ``…_boxes.json``.

A box describes one connected lesion (instance) on a voxel grid ``(X, Y, Z)``:

``id``            int, the instance id in the instance map (1..N)
``label``         str, what it is (``lesion``, ``microbleed`` …)
``voxel``         ``[x0, y0, z0, x1, y1, z1]`` half-open voxel indices: the box holds voxels
                  ``x0 <= i < x1`` … This is MONAI's ``StandardMode`` (``"xyzxyz"``) corner
                  convention, so ``boxes_to_array(boxes)`` feeds ``monai.data.box_utils``
                  (``box_iou``, ``convert_box_mode`` …) directly.
``mm``            ``[xmin, ymin, zmin, xmax, ymax, zmax]`` world extent (mm) of the box's outer
                  voxel faces through the affine (voxel centres at integer indices, so faces
                  at ``x0 - 0.5`` and ``x1 - 0.5``); min/max over the 8 corners, so flipped and
                  oblique affines give the axis-aligned world box that encloses the voxel box.
``centroid_vox``  ``[i, j, k]`` mean voxel index of the lesion's voxels
``centroid_mm``   ``[x, y, z]`` that centroid through the affine
``volume_ml``     lesion volume (voxel count × voxel volume) in mL
``n_voxels``      voxel count

``…_boxes.json`` (written by :func:`write_boxes_json`)::

    {"format": "cogimg-boxes", "version": 1,
     "shape": [X, Y, Z], "affine": [[4 × 4]], "boxes": [{...}, ...], "meta": {...}}

Required per box: ``id``, ``label``, ``voxel``, ``mm``; the rest is optional (a user's own
file may lack centroids). :func:`read_boxes_json` checks every field and that ``mm`` agrees
with ``voxel`` through the file's affine.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from cogimg.io import atomic_write_text

BOXES_FORMAT = "cogimg-boxes"
BOXES_VERSION = 1
REQUIRED_BOX_KEYS = ("id", "label", "voxel", "mm")
_MM_TOLERANCE = 1e-3  # mm; JSON round-trips floats exactly, so this only absorbs rounding


def _structure(connectivity: int) -> np.ndarray:
    ranks = {6: 1, 18: 2, 26: 3}
    if connectivity not in ranks:
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    return ndimage.generate_binary_structure(3, ranks[connectivity])


def voxel_box_to_mm(voxel_box, affine: np.ndarray) -> list[float]:
    """World extent ``[xmin, ymin, zmin, xmax, ymax, zmax]`` (mm) of a half-open voxel box.

    All 8 corners are transformed (MONAI's ``apply_affine_to_boxes`` transforms only two,
    which is exact for flips and permutations but not for oblique affines).
    """
    x0, y0, z0, x1, y1, z1 = (float(v) for v in voxel_box)
    corners = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)]) - 0.5
    world = corners @ np.asarray(affine, dtype=np.float64)[:3, :3].T + np.asarray(affine)[:3, 3]
    return [float(v) for v in (*world.min(axis=0), *world.max(axis=0))]


def mm_box_to_voxel(mm_box, affine: np.ndarray) -> list[float]:
    """Continuous voxel box ``[x0, y0, z0, x1, y1, z1]`` (voxel ``i`` spans ``[i, i + 1)``) that
    encloses the world box ``mm_box`` (mm); the inverse of :func:`voxel_box_to_mm` for
    axis-aligned affines (flips and permutations included), an enclosing box otherwise."""
    lo, hi = np.asarray(mm_box, dtype=np.float64)[:3], np.asarray(mm_box, dtype=np.float64)[3:]
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    voxel = corners @ inverse[:3, :3].T + inverse[:3, 3] + 0.5
    return [float(v) for v in (*voxel.min(axis=0), *voxel.max(axis=0))]


def scored_boxes_from_probabilities(probabilities: np.ndarray, threshold: float = 0.5,
                                    min_voxels: int = 1, connectivity: int = 26
                                    ) -> tuple[np.ndarray, np.ndarray]:
    """Detections from a segmentation: one box per connected component of
    ``probabilities >= threshold``, scored by the component's highest probability.

    Args:
        probabilities: foreground probability (X, Y, Z) in [0, 1].

    Returns:
        boxes ``(N, 6)`` float64 half-open voxel boxes (MONAI ``xyzxyz``) and scores ``(N,)``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 3:
        raise ValueError(f"probabilities must be (X, Y, Z), got shape {probabilities.shape}")
    instances, _ = label_components(probabilities >= threshold, connectivity)
    boxes = boxes_from_instances(instances, np.eye(4), min_voxels=min_voxels)
    peaks = ndimage.maximum(probabilities, instances, [b["id"] for b in boxes]) if boxes else []
    return boxes_to_array(boxes), np.asarray(peaks, dtype=np.float64).reshape(-1)


def boxes_from_instances(instances: np.ndarray, affine: np.ndarray, min_voxels: int = 1,
                         label: str = "lesion", offset=(0, 0, 0)) -> list[dict]:
    """One box per instance id of an instance map.

    Args:
        instances: integer (X, Y, Z), 0 = background, 1..N = instances (ids may have gaps).
        affine: (4, 4) voxel → world mm.
        min_voxels: instances with fewer voxels get no box (a deliberate size filter).
        label: the ``label`` of every box.
        offset: voxel index ``(i, j, k)`` of ``instances[0, 0, 0]`` on the grid ``affine``
            belongs to, when ``instances`` is a crop of it (voxel fields are then full-grid).

    Returns:
        Boxes ordered by id, as described in the module docstring.
    """
    instances = np.asarray(instances)
    if instances.ndim != 3 or not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"instances must be an integer (X, Y, Z) array, got {instances.dtype} {instances.shape}")
    if instances.size and instances.min() < 0:
        raise ValueError("instances must be ≥ 0 (0 = background)")
    affine = np.asarray(affine, dtype=np.float64)
    offset = np.asarray(offset, dtype=np.int64).reshape(3)
    voxel_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    counts = np.bincount(instances.ravel()) if instances.size else np.zeros(1, dtype=np.int64)
    ids = [i for i in range(1, counts.size) if counts[i] >= max(min_voxels, 1)]
    centroids = ndimage.center_of_mass(instances > 0, instances, ids) if ids else []
    slices = ndimage.find_objects(instances)
    boxes = []
    for instance_id, centroid in zip(ids, centroids):
        region = slices[instance_id - 1]
        voxel = [int(s.start + o) for s, o in zip(region, offset)]
        voxel += [int(s.stop + o) for s, o in zip(region, offset)]
        centroid_vox = np.asarray(centroid, dtype=np.float64) + offset
        boxes.append({
            "id": int(instance_id),
            "label": label,
            "voxel": voxel,
            "mm": voxel_box_to_mm(voxel, affine),
            "centroid_vox": [float(v) for v in centroid_vox],
            "centroid_mm": [float(v) for v in affine[:3, :3] @ centroid_vox + affine[:3, 3]],
            "volume_ml": float(counts[instance_id] * voxel_ml),
            "n_voxels": int(counts[instance_id]),
        })
    return boxes


def label_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    """Connected components of a binary (X, Y, Z) mask: (int32 instance map, count)."""
    instances, count = ndimage.label(np.asarray(mask) > 0, structure=_structure(connectivity))
    return instances.astype(np.int32), int(count)


def boxes_from_mask(mask: np.ndarray, affine: np.ndarray, connectivity: int = 26,
                    min_voxels: int = 1, label: str = "lesion") -> list[dict]:
    """Boxes of the connected components (``connectivity`` 6/18/26) of a binary mask."""
    instances, _ = label_components(mask, connectivity)
    return boxes_from_instances(instances, affine, min_voxels=min_voxels, label=label)


def instances_and_boxes(mask: np.ndarray, affine: np.ndarray, label: str = "lesion",
                        connectivity: int = 26, region: tuple[slice, ...] | None = None,
                        dtype=np.int16) -> tuple[np.ndarray, list[dict]]:
    """Instance map (``dtype`` (X, Y, Z), 1..N) and boxes of a binary mask's components.

    Args:
        region: slices known to hold every foreground voxel; labelling only that region is
            much faster on large grids (None = the whole grid).
    """
    mask = np.asarray(mask)
    region = region or tuple(slice(0, n) for n in mask.shape)
    if mask[region].sum() != np.count_nonzero(mask):
        raise ValueError("instances_and_boxes: the mask has foreground outside `region`")
    crop_instances, count = label_components(mask[region], connectivity)
    if count > np.iinfo(dtype).max:
        raise ValueError(f"{count} components do not fit in {np.dtype(dtype).name}")
    instances = np.zeros(mask.shape, dtype=dtype)
    instances[region] = crop_instances
    boxes = boxes_from_instances(crop_instances, affine, label=label,
                                 offset=[s.start for s in region])
    return instances, boxes


def boxes_to_array(boxes: list[dict], key: str = "voxel") -> np.ndarray:
    """``(N, 6)`` float array of ``box[key]`` (``voxel`` = MONAI ``xyzxyz`` mode, or ``mm``)."""
    return np.array([box[key] for box in boxes], dtype=np.float64).reshape(-1, 6)


def write_boxes_json(path: str | Path, boxes: list[dict], shape, affine: np.ndarray,
                     meta: dict | None = None) -> Path:
    """Write boxes with their grid (``shape``, ``affine``) to ``path``, atomically.

    The document is validated before writing, so a file this writes always reads back.
    """
    path = Path(path)
    document = {
        "format": BOXES_FORMAT,
        "version": BOXES_VERSION,
        "shape": [int(v) for v in shape],
        "affine": np.asarray(affine, dtype=np.float64).tolist(),
        "boxes": boxes,
        "meta": meta or {},
    }
    _validate(document, path)
    return atomic_write_text(path, json.dumps(document, indent=1))


def read_boxes_json(path: str | Path) -> dict:
    """Read and validate a ``…_boxes.json``.

    Returns:
        The document with ``shape`` as a tuple and ``affine`` as a (4, 4) float64 array.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: invalid JSON or any invalid field; the message names the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"boxes file not found: {path}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    _validate(document, path)
    document["shape"] = tuple(int(v) for v in document["shape"])
    document["affine"] = np.asarray(document["affine"], dtype=np.float64)
    document.setdefault("meta", {})
    return document


def _validate(document, path: Path) -> None:
    """Raise ValueError naming ``path`` and the key at the first problem."""

    def fail(key: str, problem: str):
        raise ValueError(f"{path}: {key}: {problem}")

    if not isinstance(document, dict):
        fail("<root>", "expected a JSON object")
    for key in ("shape", "affine", "boxes"):
        if key not in document:
            fail(key, "missing")
    if document.get("format", BOXES_FORMAT) != BOXES_FORMAT:
        fail("format", f"expected {BOXES_FORMAT!r}, got {document['format']!r}")
    shape = document["shape"]
    if (not isinstance(shape, (list, tuple)) or len(shape) != 3
            or not all(isinstance(v, (int, np.integer)) and v > 0 for v in shape)):
        fail("shape", f"expected 3 positive integers, got {shape!r}")
    try:
        affine = np.asarray(document["affine"], dtype=np.float64)
    except (TypeError, ValueError):
        fail("affine", "not a 4 × 4 array of numbers")
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        fail("affine", f"expected a finite, invertible 4 × 4 matrix, got shape {affine.shape}")
    if not isinstance(document["boxes"], list):
        fail("boxes", "expected a list")
    seen = set()
    for index, box in enumerate(document["boxes"]):
        where = f"boxes[{index}]"
        if not isinstance(box, dict):
            fail(where, "expected an object")
        for key in REQUIRED_BOX_KEYS:
            if key not in box:
                fail(f"{where}.{key}", "missing")
        if not isinstance(box["id"], (int, np.integer)) or isinstance(box["id"], bool) or box["id"] < 1:
            fail(f"{where}.id", f"expected an integer ≥ 1, got {box['id']!r}")
        if box["id"] in seen:
            fail(f"{where}.id", f"duplicate id {box['id']}")
        seen.add(box["id"])
        if not isinstance(box["label"], str) or not box["label"]:
            fail(f"{where}.label", f"expected a non-empty string, got {box['label']!r}")
        voxel = box["voxel"]
        if (not isinstance(voxel, (list, tuple)) or len(voxel) != 6
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in voxel)):
            fail(f"{where}.voxel", f"expected 6 integers [x0, y0, z0, x1, y1, z1], got {voxel!r}")
        for axis, name in enumerate("xyz"):
            lo, hi = voxel[axis], voxel[axis + 3]
            if hi <= lo:
                fail(f"{where}.voxel", f"{name}1={hi} must be greater than {name}0={lo}")
            if lo < 0 or hi > shape[axis]:
                fail(f"{where}.voxel", f"{name} range [{lo}, {hi}) lies outside the grid shape {list(shape)}")
        mm = box["mm"]
        if (not isinstance(mm, (list, tuple)) or len(mm) != 6
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mm)):
            fail(f"{where}.mm", f"expected 6 numbers, got {mm!r}")
        expected = voxel_box_to_mm(voxel, affine)
        if not np.allclose(mm, expected, atol=_MM_TOLERANCE):
            fail(f"{where}.mm", f"{mm} does not match the voxel box through the affine ({expected})")
