"""Dataset fingerprint: what a planner needs to know about a segmentation dataset, read once.

Modelled on nnU-Net v2's ``DatasetFingerprintExtractor``: every subject is loaded once
(through :func:`cogimg.data.bids.load_dataset`, headers validated, voxels decoded only here),
reoriented to RAS+ (``tio.ToCanonical``, as the preprocessing does), and summarised:

* per modality: voxel spacing (mm) and shape ``(X, Y, Z)`` of every subject, and the
  intensity statistics of the **foreground** (voxels where the label map is > 0): mean,
  median, std, min, max and the 0.5 / 99.5 percentiles of a seeded sample, as nnU-Net
  draws it: ``FOREGROUND_SAMPLES // n_subjects`` voxels per subject, with replacement,
  from ``numpy.random.default_rng([seed, subject index, modality index])`` (so the sample
  does not depend on the number of workers); exact per-subject statistics over all foreground voxels too.
  A modality on another grid than the label (ISLES'22 FLAIR) is resampled onto the label's
  grid (linear) for these statistics;
* per subject: label voxels per class, lesion volume (mL, voxels > 0) and 26-connected
  components, and the fraction of the reference image's voxels inside its non-zero
  bounding box (nnU-Net's crop to non-zero, which decides ``use_mask_for_norm``);
* class frequencies: voxels of each label value over all voxels of the dataset.

:func:`extract_fingerprint` returns the JSON-ready dict; :func:`write_fingerprint` writes it
atomically; :func:`format_fingerprint` renders a summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torchio as tio

from cogimg.io import atomic_write_text

#: Bump when a field's meaning changes.
FINGERPRINT_VERSION = 1
#: Foreground voxels sampled over the whole dataset for the intensity statistics (nnU-Net's
#: ``num_foreground_voxels_for_intensitystats`` is 10**8; a tenth keeps the sample at 40 MB
#: per modality, float32).
FOREGROUND_SAMPLES = 10**7
#: The intensity percentiles recorded (nnU-Net's CT clipping range).
PERCENTILES = (0.5, 99.5)


def extract_fingerprint(data_root: str | Path, *, preset: str | None = "stroke",
                        modalities: Iterable[str] | None = None, label_key: str | None = None,
                        samples: int = FOREGROUND_SAMPLES, seed: int = 1234,
                        num_workers: int | None = None, progress: bool = True) -> dict:
    """Read the dataset under ``data_root`` once and return its fingerprint.

    Args:
        data_root: BIDS tree (:mod:`cogimg.data.bids`).
        preset: disease preset whose subjects (its diagnoses, as the datamodules select
            them), modalities (required, in order; the first is the reference whose
            spacings/shapes plan the resampling) and label keys are used; ``None``: every
            subject and modality found and the first label key.
        modalities: use these modality keys instead (the first is the reference).
        label_key: label map to use; default: the preset's first key present, else the
            dataset's first.
        samples: foreground voxels sampled over the dataset for the global statistics.
        seed: seeds the sample (subject ``i``, modality ``m``: ``default_rng([seed, i, m])``).
        num_workers: threads that read subjects (default: as :func:`load_dataset`).
        progress: show a progress bar on stderr.

    Raises:
        DatasetError: the tree fails validation (every bad file named).
        ValueError: a file cannot be decoded (named), no label map, no subject.
    """
    from cogimg.data.bids import load_dataset
    from cogimg.diseases import get_preset

    preset_obj = get_preset(preset) if preset is not None else None
    wanted = tuple(modalities) if modalities is not None else (
        preset_obj.modalities if preset_obj is not None else None)
    dataset = load_dataset(data_root, required_modalities=wanted or (), modalities=wanted,
                           diagnoses=preset_obj.diagnoses if preset_obj is not None else None,
                           validate_voxels=False, num_workers=num_workers)
    if not dataset.subjects:
        raise ValueError(f"{dataset.root}: no subject with modalities {list(wanted or [])}")
    mods = list(wanted) if wanted is not None else dataset.modalities()
    label = _label_key(dataset, preset_obj, label_key)
    if lacking := [s["subject_id"] for s in dataset.subjects if label not in s]:
        raise ValueError(f"{dataset.root}: subject(s) {lacking} have no {label!r} label map")
    per_subject = max(1, int(samples) // len(dataset.subjects))
    jobs = list(enumerate(dataset.subjects))
    with ThreadPoolExecutor(num_workers or min(8, len(jobs))) as pool:
        results = pool.map(lambda job: _read_subject(job[1], mods, label, per_subject,
                                                     (seed, job[0])), jobs)
        results = list(_progress(results, len(jobs), progress))
    return _assemble(dataset.root, preset, mods, label, results, per_subject, seed)


def write_fingerprint(fingerprint: dict, path: str | Path) -> Path:
    """Write ``fingerprint`` as indented JSON, atomically. Returns the path."""
    return atomic_write_text(Path(path), json.dumps(fingerprint, indent=1) + "\n")


def load_fingerprint(path: str | Path) -> dict:
    """Read a fingerprint JSON; ``ValueError`` naming the file when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read fingerprint {path}: {err}") from err
    if not isinstance(data, dict) or data.get("version") != FINGERPRINT_VERSION:
        raise ValueError(f"{path}: not a cogimg fingerprint (version {FINGERPRINT_VERSION})")
    return data


def _label_key(dataset, preset_obj, label_key: str | None) -> str:
    present = dataset.label_keys()
    if label_key is not None:
        if label_key not in present:
            raise ValueError(f"{dataset.root}: no label map {label_key!r}; found {present}")
        return label_key
    candidates = preset_obj.label_keys if preset_obj is not None and preset_obj.label_keys else present
    found = next((k for k in candidates if k in present), None)
    if found is None:
        raise ValueError(f"{dataset.root}: no label map {list(candidates)}; found {present} "
                         "(a fingerprint needs labels: foreground statistics, class frequencies)")
    return found


def _progress(results, total: int, show: bool):
    if not show:
        return results
    from tqdm import tqdm

    return tqdm(results, total=total, desc="fingerprint", unit="subject")


def _read_subject(subject: tio.Subject, modalities: Sequence[str], label: str,
                  n_samples: int, seed: tuple[int, int]) -> dict:
    """One subject's entry (each file decoded once; a file that fails is named)."""
    from scipy import ndimage

    images = {key: _read_image(subject[key], key == label) for key in (*modalities, label)}
    subject = tio.ToCanonical()(tio.Subject(**images, subject_id=subject["subject_id"]))
    mask_image = subject[label]
    labels = mask_image.data[0].numpy()
    foreground = labels > 0
    entry: dict = {"subject_id": subject["subject_id"], "modalities": {}}
    for index, key in enumerate(modalities):
        rng = np.random.default_rng([*seed, index])
        image = subject[key]
        grid = image
        if image.spatial_shape != mask_image.spatial_shape or not np.allclose(
                image.affine, mask_image.affine, atol=1e-3):
            grid = tio.Resample(mask_image)(tio.Subject(img=image))["img"]
        values = grid.data[0].numpy()[foreground].astype(np.float64)
        entry["modalities"][key] = {
            "spacing_mm": [round(float(s), 6) for s in image.spacing],
            "shape": [int(s) for s in image.spatial_shape],
            "foreground": _stats(values),
            "sample": (rng.choice(values, n_samples, replace=True) if values.size
                       else values).astype(np.float32),
        }
    reference = subject[modalities[0]].data[0].numpy()
    nonzero = np.argwhere(reference != 0)
    box = (nonzero.max(0) - nonzero.min(0) + 1) if len(nonzero) else np.zeros(3, int)
    values, counts = np.unique(labels, return_counts=True)
    _, components = ndimage.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    voxel_ml = float(np.prod(mask_image.spacing)) / 1000.0
    entry |= {
        "label_voxels": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
        "volume_ml": float(foreground.sum()) * voxel_ml,
        "components": int(components),
        "nonzero_fraction": float(np.prod(box) / reference.size),
    }
    return entry


def _read_image(image: tio.Image, is_label: bool) -> tio.Image:
    """Decode ``image``'s file with nibabel, which raises on a truncated file (TorchIO's
    reader fills the missing voxels with zeros); ``ValueError`` names the file."""
    import nibabel as nib
    import torch

    try:
        nifti = nib.load(image.path)
        data = np.asanyarray(nifti.dataobj)
    except Exception as exc:
        raise ValueError(f"{image.path}: cannot read voxel data (truncated or corrupt file?): "
                         f"{exc}") from exc
    data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    kind = tio.LabelMap if is_label else tio.ScalarImage
    return kind(tensor=torch.from_numpy(np.ascontiguousarray(data)), affine=nifti.affine,
                path=image.path)


def _stats(values: np.ndarray) -> dict:
    """Mean, median, std, min, max and :data:`PERCENTILES` of ``values`` (``None`` if empty)."""
    if not values.size:
        return {k: None for k in ("mean", "median", "std", "min", "max", *_pct_names())}
    low, high = np.percentile(values, PERCENTILES)
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "std": float(values.std()), "min": float(values.min()), "max": float(values.max()),
            _pct_names()[0]: float(low), _pct_names()[1]: float(high)}


def _pct_names() -> tuple[str, str]:
    return tuple(f"percentile_{p:g}".replace(".", "_") for p in PERCENTILES)  # type: ignore


def _assemble(root: Path, preset: str | None, modalities: list[str], label: str,
              results: list[dict], per_subject: int, seed: int) -> dict:
    mods = {}
    for key in modalities:
        sample = np.concatenate([r["modalities"][key].pop("sample") for r in results])
        mods[key] = {
            "spacings_mm": [r["modalities"][key]["spacing_mm"] for r in results],
            "shapes": [r["modalities"][key]["shape"] for r in results],
            "foreground_intensity": _stats(sample) | {"n_samples": int(sample.size)},
            "foreground_per_subject": [r["modalities"][key]["foreground"] for r in results],
        }
    totals: dict[str, int] = {}
    for r in results:
        for value, count in r["label_voxels"].items():
            totals[value] = totals.get(value, 0) + count
    all_voxels = sum(totals.values())
    return {
        "version": FINGERPRINT_VERSION,
        "root": str(root),
        "preset": preset,
        "reference": modalities[0],
        "label_key": label,
        "n_subjects": len(results),
        "modalities": mods,
        "subjects": [{k: r[k] for k in ("subject_id", "label_voxels", "volume_ml", "components",
                                        "nonzero_fraction")} for r in results],
        "class_frequencies": {v: totals[v] / all_voxels for v in sorted(totals, key=int)},
        "sampling": {"samples_per_subject": per_subject, "seed": seed},
    }


def format_fingerprint(fp: dict) -> str:
    """A few lines summarising a fingerprint (medians and ranges over subjects)."""
    lines = [(f"Fingerprint of {fp['root']}: {fp['n_subjects']} subject(s), label "
             f"{fp['label_key']!r}, reference {fp['reference']!r}")]
    for key, info in fp["modalities"].items():
        spacing = np.median(np.asarray(info["spacings_mm"]), axis=0)
        shape = np.median(np.asarray(info["shapes"]), axis=0)
        stats = info["foreground_intensity"]
        intensity = ("no foreground" if stats["mean"] is None else
                     f"foreground mean {stats['mean']:.4g} std {stats['std']:.4g} "
                     f"p0.5 {stats['percentile_0_5']:.4g} p99.5 {stats['percentile_99_5']:.4g}")
        lines.append(f"  {key}: median spacing {_fmt(spacing, '.3g')} mm, median shape "
                     f"{_fmt(shape, '.0f')}; {intensity}")
    volumes = [s["volume_ml"] for s in fp["subjects"]]
    components = [s["components"] for s in fp["subjects"]]
    lines.append(f"  lesion volume mL: median {np.median(volumes):.3g} "
                 f"[{min(volumes):.3g}-{max(volumes):.3g}]; components: median "
                 f"{np.median(components):g} [{min(components)}-{max(components)}]; "
                 f"empty labels: {sum(v == 0 for v in volumes)}")
    freq = ", ".join(f"{k}: {v:.3g}" for k, v in fp["class_frequencies"].items())
    lines.append(f"  class frequencies: {freq}")
    return "\n".join(lines)


def _fmt(values, spec: str) -> str:
    return "x".join(format(float(v), spec) for v in values)
