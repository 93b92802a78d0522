"""Out-of-distribution check: is a new scan far from what the model was trained on?

At fit time the datamodule summarises its training inputs (:func:`summarise_inputs`, stored
in every checkpoint as ``input_summary``; for domain-randomised training, seeded draws of the
training transform, since the cached images are never what the network sees); at inference
the same features of the new scan are compared with that summary (:func:`ood_report`).
Features, per scan:

- per modality, **after preprocessing** (what the network sees), inside the foreground
  (voxels above the image mean, TorchIO's heuristic): the 5th, 25th, 50th, 75th and 95th
  intensity percentiles (not the extreme tails, which a large lesion moves), the foreground fraction of the volume and the *roughness*
  (mean absolute difference between neighbouring foreground voxels over the foreground
  standard deviation: white noise gives ≈ 1.1, smooth anatomy ≈ 0.2);
- the **native geometry** of the reference modality: voxel spacing (mm) and field of view
  (mm), each sorted smallest to largest so that the orientation does not matter.

Each feature's distance is a robust z-score, ``|x - median| / scale`` with ``scale`` =
1.4826 × the median absolute deviation of the training values, floored (a training set
whose scans all share one spacing must not make 2.0 vs 2.01 mm an outlier). The score is the
largest distance; the scan is flagged when it exceeds the threshold (default
:data:`DEFAULT_THRESHOLD` robust SDs), and the reasons name the features beyond it.

An intensity scaling that the preprocessing removes (z-score or min-max normalisation) does
not change any feature, by design: it does not change what the model sees either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cogimg.data.cache import read_meta
from cogimg.data.sampling import SeededSubjectsDataset

SUMMARY_VERSION = 1
DEFAULT_THRESHOLD = 6.0
PERCENTILES = (5, 25, 50, 75, 95)
#: At most this many training subjects are read (evenly spaced): the summary is robust
#: statistics, which a few dozen scans pin down.
MAX_SUBJECTS = 64
MAD_TO_SD = 1.4826


def _intensity_features(volume: torch.Tensor, prefix: str) -> dict[str, float]:
    x = volume.float()
    fg = x > x.mean()
    values = x[fg]
    if values.numel() < 10:
        return {f"{prefix}:foreground_fraction": float(fg.float().mean())}
    quantiles = np.percentile(values.numpy(), PERCENTILES)
    out = {f"{prefix}:p{q:02d}": float(v) for q, v in zip(PERCENTILES, quantiles)}
    out[f"{prefix}:foreground_fraction"] = float(fg.float().mean())
    diffs = []
    for axis in range(3):
        both = fg.narrow(axis, 1, fg.shape[axis] - 1) & fg.narrow(axis, 0, fg.shape[axis] - 1)
        step = (x.narrow(axis, 1, x.shape[axis] - 1) - x.narrow(axis, 0, x.shape[axis] - 1)).abs()
        diffs.append(step[both])
    diffs = torch.cat(diffs)
    spread = float(values.std())
    out[f"{prefix}:roughness"] = float(diffs.mean()) / spread if diffs.numel() and spread > 0 else 0.0
    return out


def scan_features(entry, modalities: Sequence[str]) -> dict[str, float]:
    """Features of one cached, preprocessed scan (see the module docstring).

    ``entry``: the cache entry folder (or a cached ``tio.Subject``, whose ``cache_entry``
    names it). The arrays are read from the entry's files, not through the subject, so the
    subject's images stay unloaded (a datamodule keeps its subjects for training).
    """
    entry = Path(entry["cache_entry"] if not isinstance(entry, (str, Path)) else entry)
    meta = read_meta(entry)
    if meta is None:
        raise ValueError(f"{entry} is not a complete cache entry")
    out: dict[str, float] = {}
    for m in modalities:
        if m in meta["images"]:
            array = np.load(entry / meta["images"][m]["file"], mmap_mode="r")
            out.update(_intensity_features(torch.from_numpy(np.asarray(array[0], dtype=np.float32)), m))
    native = meta["images"][meta["reference"]]["native"]
    affine = np.asarray(native["affine"], dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    fov = spacing * np.asarray(native["shape"][:3], dtype=float)
    for name, values in (("spacing", np.sort(spacing)), ("fov", np.sort(fov))):
        for rank, value in zip(("min", "mid", "max"), values):
            out[f"geometry:{name}_{rank}_mm"] = float(value)
    return out


def _floor(name: str, medians: dict[str, float]) -> float:
    """Smallest scale of a feature (units of the feature)."""
    kind = name.split(":")[1]
    if kind.startswith("p") and kind[1:].isdigit():
        prefix = name.split(":")[0]
        span = medians.get(f"{prefix}:p95", 1.0) - medians.get(f"{prefix}:p05", 0.0)
        return max(0.05 * abs(span), 1e-6)
    if kind == "foreground_fraction":
        return 0.02
    if kind == "roughness":
        return 0.05
    if kind.startswith("spacing"):
        return 0.1 + 0.05 * abs(medians[name])
    return 5.0 + 0.05 * abs(medians[name])  # field of view, mm


def summarise_features(rows: Sequence[dict[str, float]], threshold: float = DEFAULT_THRESHOLD) -> dict:
    """The ``input_summary`` of training feature rows (:func:`scan_features` each)."""
    if not rows:
        raise ValueError("no training scans to summarise")
    names = sorted({k for r in rows for k in r})
    columns = {n: np.array([r[n] for r in rows if n in r and math.isfinite(r[n])]) for n in names}
    medians = {n: float(np.median(v)) for n, v in columns.items() if v.size}
    features = {}
    for name, median in medians.items():
        v = columns[name]
        mad = float(np.median(np.abs(v - median)))
        features[name] = {"median": median, "scale": max(MAD_TO_SD * mad, _floor(name, medians)),
                          "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
    return {"version": SUMMARY_VERSION, "n_subjects": len(rows), "threshold": float(threshold),
            "features": features}


def drawn_features(subject, modalities: Sequence[str], entry) -> dict[str, float]:
    """:func:`scan_features` of an in-memory ``subject`` whose images a training transform
    redrew from the cached scan ``entry`` (a domain-randomised draw): intensity features of
    its images, geometry of the cached scan (the draw keeps its grid)."""
    out = scan_features(entry, ())
    for m in modalities:
        if m in subject:
            out.update(_intensity_features(subject[m].data[0], m))
    return out


def summarise_inputs(subjects: Sequence, modalities: Sequence[str],
                     max_subjects: int = MAX_SUBJECTS, transform=None, seed: int = 0) -> dict:
    """Summary of cached, preprocessed training subjects (at most ``max_subjects``, evenly
    spaced in the given order). With ``transform``, a training transform that redraws the
    images (domain randomisation: the cached images are never what the network sees), the
    summary is of one draw per subject instead, the k-th under torch seed ``seed + k`` (the
    caller's random state is left as it was)."""
    picked = list(subjects)
    if len(picked) > max_subjects:
        picked = [picked[int(i)] for i in np.linspace(0, len(picked) - 1, max_subjects)]
    if transform is None:
        return summarise_features([scan_features(s, modalities) for s in picked])
    draws = SeededSubjectsDataset(picked, transform=transform)
    return summarise_features([drawn_features(draws[(k, seed + k)], modalities, s)
                               for k, s in enumerate(picked)])


def describe(name: str) -> str:
    """A reader's name for a feature key (``dwi:p99`` → ``dwi intensity, 99th percentile …``)."""
    prefix, kind = name.split(":", 1)
    if prefix == "geometry":
        what, rank, _ = kind.split("_")
        label = "voxel spacing" if what == "spacing" else "field of view"
        return f"{label} ({ {'min': 'smallest', 'mid': 'middle', 'max': 'largest'}[rank]} axis, mm)"
    if kind == "foreground_fraction":
        return f"{prefix} foreground fraction"
    if kind == "roughness":
        return f"{prefix} roughness (noise)"
    q = int(kind[1:])
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(q % 10 if q // 10 != 1 else 0, "th")
    return f"{prefix} intensity, {q}{suffix} percentile (after preprocessing)"


def ood_report(features: dict[str, float], summary: dict | None,
               threshold: float | None = None) -> dict | None:
    """``{"flag", "score", "threshold", "reasons", "features"}`` for one scan, or ``None``
    when there is no summary (a checkpoint older than this check).

    ``score``: the largest robust z-score over the features both sides know; ``reasons``: one
    line per feature beyond ``threshold`` (default: the summary's), largest first; a feature
    that cannot be computed (e.g. an empty foreground) is a reason by itself.
    """
    if not summary:
        return None
    threshold = float(summary.get("threshold", DEFAULT_THRESHOLD) if threshold is None else threshold)
    scored, reasons = {}, []
    for name, ref in summary["features"].items():
        if name not in features:
            if name.split(":")[0] in {k.split(":")[0] for k in features}:
                reasons.append((math.inf, f"{describe(name)} cannot be computed (empty foreground?)"))
            continue
        value = features[name]
        z = abs(value - ref["median"]) / ref["scale"] if math.isfinite(value) else math.inf
        scored[name] = z
        if z > threshold:
            text = (f"{describe(name)}: {value:.3g} vs training median {ref['median']:.3g} "
                    f"(range {ref['min']:.3g} to {ref['max']:.3g}; {z:.1f} robust SD)")
            reasons.append((z, text))
    score = max([*scored.values(), *(z for z, _ in reasons)], default=0.0)
    reasons.sort(key=lambda r: -r[0])
    return {"flag": bool(score > threshold), "score": round(float(score), 3) if math.isfinite(score) else None,
            "threshold": threshold, "reasons": [text for _, text in reasons],
            "n_training_subjects": int(summary.get("n_subjects", 0)),
            "features": {k: round(v, 4) for k, v in features.items()}}


__all__ = ["DEFAULT_THRESHOLD", "describe", "ood_report", "scan_features", "summarise_features",
           "summarise_inputs"]
