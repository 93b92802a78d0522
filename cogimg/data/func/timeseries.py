"""Region time series: confound regression, filtering, motion summary and a cache.

:func:`extract_time_series` loads the confounds of a run with nilearn's
``load_confounds_strategy`` (fMRIPrep) and hands them to ``NiftiLabelsMasker`` (region means,
then nilearn ``signal.clean``: detrend, confound regression, Butterworth filter, z-score),
so cogimg does no signal processing of its own. :func:`load_func_dataset` does it for every
run, caches each ``(T, R)`` array as ``.npy`` keyed by the run's files, the parcellation and
the :class:`SignalConfig`, and summarises head motion (framewise displacement) per run:
runs over the limit are flagged with their reason, never dropped.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.data.func.atlas import Parcellation
from cogimg.data.func.bold import BoldRun, default_parcellation, find_bold_runs
from cogimg.io import atomic_path, atomic_write_text

CACHE_FORMAT = 1


@dataclass(frozen=True)
class SignalConfig:
    """How a run becomes region time series.

    Attributes:
        strategy: a nilearn ``load_confounds_strategy`` preset (``simple``, ``scrubbing``,
            ``compcor``, ``ica_aroma``) or ``"none"`` (no confound regression: raw BIDS).
        high_pass_hz / low_pass_hz: Butterworth cut-offs in Hz (``None``: no filter).
        fd_threshold_mm: framewise displacement (Power et al. 2012) above which a volume
            counts as high-motion (and is censored by ``scrubbing``).
        max_high_motion_fraction: a run with a larger fraction of high-motion volumes is
            flagged.
    """

    strategy: str = "simple"
    high_pass_hz: float | None = 0.01
    low_pass_hz: float | None = None
    fd_threshold_mm: float = 0.5
    max_high_motion_fraction: float = 0.3

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def load_confounds_for(run: BoldRun, config: SignalConfig) -> tuple[pd.DataFrame | None, np.ndarray | None]:
    """``(confounds (T, C), sample_mask)`` for ``run`` per ``config.strategy``; ``(None, None)``
    for ``"none"``.

    Raises:
        ValueError: a strategy other than ``none`` on a run without confounds (raw BIDS).
    """
    if config.strategy == "none":
        return None, None
    if run.confounds is None:
        raise ValueError(f"{run.bold}: confound strategy {config.strategy!r} needs fMRIPrep "
                         "confounds and this run has none; use strategy='none'")
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    kwargs = {"fd_threshold": config.fd_threshold_mm} if config.strategy == "scrubbing" else {}
    confounds, sample_mask = load_confounds_strategy(str(run.bold), denoise_strategy=config.strategy,
                                                     **kwargs)
    return confounds, sample_mask


def extract_time_series(run: BoldRun, parcellation: Parcellation, config: SignalConfig) -> np.ndarray:
    """Cleaned region time series of ``run``: float32 (T', R), z-scored per region.

    ``T'`` = T unless scrubbing censors volumes; columns follow ``parcellation.indices``.

    Raises:
        ValueError: the parcellation is not on the run's grid (names both files).
    """
    import nibabel as nib
    from nilearn.maskers import NiftiLabelsMasker

    from cogimg.data.func.bold import same_grid

    bold_img, atlas_img = nib.load(run.bold), parcellation.label_image()
    if not same_grid(bold_img, atlas_img):
        raise ValueError(f"{parcellation.image}: parcellation is not on the grid of {run.bold} "
                         f"(shape {atlas_img.shape[:3]} vs {bold_img.shape[:3]} or affines differ)")
    confounds, sample_mask = load_confounds_for(run, config)
    masker = NiftiLabelsMasker(labels_img=atlas_img, standardize="zscore_sample", detrend=True,
                               high_pass=config.high_pass_hz, low_pass=config.low_pass_hz,
                               t_r=run.tr_s)
    # nilearn calls gc.collect() on every image access; with the objects of a large process
    # (torch, MONAI …) each costs most of a second. Freezing the existing objects makes those
    # collections cheap; objects created by the masker are still collected.
    gc.freeze()
    try:
        series = masker.fit_transform(bold_img, confounds=confounds, sample_mask=sample_mask)
    finally:
        gc.unfreeze()
    order = sorted(parcellation.indices)  # the masker's columns: sorted label values
    columns = [order.index(k) for k in parcellation.indices]
    return np.ascontiguousarray(series[:, columns], dtype=np.float32)


def motion_summary(run: BoldRun, config: SignalConfig) -> dict:
    """Mean framewise displacement (mm), fraction of volumes over the FD threshold, flag and
    reason for one run (from its confounds; a run without confounds is not flagged)."""
    row = {"subject": run.run_id, "mean_fd_mm": float("nan"), "high_motion_fraction": float("nan"),
           "flagged": False, "reason": ""}
    if run.confounds is None:
        row["reason"] = "no confounds: motion unknown"
        return row
    table = pd.read_csv(run.confounds, sep="\t", na_values=["n/a"])
    if "framewise_displacement" not in table.columns:
        row["reason"] = f"no framewise_displacement column in {run.confounds.name}"
        return row
    fd = table["framewise_displacement"].fillna(0.0).to_numpy(float)  # volume 0 has no FD
    frac = float(np.mean(fd > config.fd_threshold_mm))
    row.update(mean_fd_mm=float(fd.mean()), high_motion_fraction=frac)
    if frac > config.max_high_motion_fraction:
        row["flagged"] = True
        row["reason"] = (f"{frac:.0%} of volumes with FD > {config.fd_threshold_mm:g} mm "
                         f"(limit {config.max_high_motion_fraction:.0%}); mean FD {fd.mean():.2f} mm")
    return row


@dataclass
class FuncDataset:
    """Region time series of every run, with what is needed to read them.

    Attributes:
        subjects: run keys (``sub-X`` or ``sub-X_ses-Y``), sorted.
        series: key → float32 (T, R) cleaned, z-scored series (T may differ between sites).
        region_names / networks: R entries, parcellation order.
        centroids_mm: (R, 3) region centroids, world mm.
        motion: one row per run: ``subject``, ``mean_fd_mm``, ``high_motion_fraction``,
            ``flagged`` (bool), ``reason`` — flagged runs stay in ``series``.
        tr_s: key → repetition time (s).
    """

    subjects: list[str]
    series: dict[str, np.ndarray]
    region_names: list[str]
    networks: list[str]
    centroids_mm: np.ndarray
    motion: pd.DataFrame
    tr_s: dict[str, float] = field(default_factory=dict)


def _source_key(run: BoldRun) -> dict:
    out = {}
    for name, path in (("bold", run.bold), ("confounds", run.confounds)):
        if path is not None:
            st = os.stat(path)
            out[name] = [path.name, st.st_size, st.st_mtime_ns]
    return out


def cached_time_series(run: BoldRun, parcellation: Parcellation, config: SignalConfig,
                       cache_dir: str | Path | None, parcellation_digest: str | None = None) -> np.ndarray:
    """:func:`extract_time_series` through the cache under ``cache_dir`` (``None``: no cache).

    Layout: ``<cache_dir>/func-<hash(parcellation, config)>/<run_id>-<hash(files)>.npy``
    (plus ``config.json``); a changed bold/confounds file (size or mtime), parcellation or
    config gives a new name, so a stale entry is never read. Writes are atomic.
    """
    if cache_dir is None:
        return extract_time_series(run, parcellation, config)
    digest = parcellation_digest or parcellation.digest()
    setting = {"format": CACHE_FORMAT, "parcellation": digest, "config": asdict(config)}
    folder = Path(cache_dir) / ("func-" + hashlib.sha256(
        json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16])
    source = hashlib.sha256(json.dumps(_source_key(run), sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"{run.run_id}-{source}.npy"
    if path.is_file():
        return np.load(path)
    series = extract_time_series(run, parcellation, config)
    if not (folder / "config.json").is_file():
        atomic_write_text(folder / "config.json", json.dumps(setting, indent=1) + "\n")
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, series)
    return series


def load_func_dataset(root: str | Path, parcellation: Parcellation | None = None,
                      config: SignalConfig = SignalConfig(),
                      cache_dir: str | Path | None = None) -> FuncDataset:
    """Region time series of every resting-state run under ``root``.

    Args:
        root: BIDS dataset (fMRIPrep derivatives are preferred when present).
        parcellation: label image + table; default: the one ``cogimg synth --bold`` wrote.
        config: confound strategy, filters and motion limits.
        cache_dir: where to cache the series (``None``: recompute every time).

    Raises:
        FuncDataError / ParcellationError / ValueError: bad runs, parcellation or grid
            (each message names the file).
    """
    root = Path(root)
    runs = find_bold_runs(root)
    parcellation = parcellation or default_parcellation(root)
    digest = parcellation.digest()
    series, rows, trs = {}, [], {}
    for run in runs:
        series[run.run_id] = cached_time_series(run, parcellation, config, cache_dir, digest)
        rows.append(motion_summary(run, config))
        trs[run.run_id] = run.tr_s
    motion = pd.DataFrame(rows, columns=["subject", "mean_fd_mm", "high_motion_fraction",
                                         "flagged", "reason"])
    motion["flagged"] = motion["flagged"].astype(bool)
    return FuncDataset(sorted(series), series, list(parcellation.names), list(parcellation.networks),
                       parcellation.centroids_mm(), motion, trs)
