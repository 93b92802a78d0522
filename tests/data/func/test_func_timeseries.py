"""Region time series: nilearn-equivalent confound regression, motion flags, the cache."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pytest

from cogimg.data.func import (
    SignalConfig,
    default_parcellation,
    extract_time_series,
    find_bold_runs,
    load_func_dataset,
)
from cogimg.data.func import timeseries as ts


def test_confound_regression_equals_nilearn_signal_clean(func_tree):
    from nilearn import signal
    from nilearn.maskers import NiftiLabelsMasker

    (run, *_), parc = find_bold_runs(func_tree), default_parcellation(func_tree)
    assert run.source == "fmriprep" and run.tr_s == 2.0 and run.n_volumes == 120
    ours = extract_time_series(run, parc, SignalConfig(strategy="simple", high_pass_hz=0.01))

    # Reference: plain region means, then nilearn's signal.clean with the confounds of the TSV
    # ("simple" = 24 motion terms + WM + CSF), read here with pandas, not load_confounds;
    # the undefined first row of the derivatives takes the second row's value (nilearn's rule).
    gc.freeze()  # as extract_time_series does: nilearn's gc.collect() calls are slow in pytest
    try:
        raw = NiftiLabelsMasker(labels_img=str(parc.image)).fit_transform(str(run.bold))
    finally:
        gc.unfreeze()
    table = pd.read_csv(run.confounds, sep="\t", na_values="n/a")
    motion = [c for c in table.columns if c.startswith(("trans_", "rot_"))]
    conf = table[motion + ["white_matter", "csf"]].bfill()
    assert len(motion) == 24
    expected = signal.clean(raw, confounds=(conf - conf.mean()).to_numpy(), detrend=True,
                            standardize="zscore_sample", high_pass=0.01, t_r=2.0)
    assert ours.shape == (120, 11) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    # and regression changed the signal: the raw means are not what came out
    assert np.abs(ours - signal.clean(raw, detrend=True, standardize="zscore_sample")).max() > 0.1


def test_motion_heavy_subject_is_flagged_with_its_id_and_kept(func_tree):
    ds = load_func_dataset(func_tree)
    motion = ds.motion.set_index("subject")
    assert motion.loc["sub-03", "flagged"] and not motion.loc[["sub-01", "sub-02"], "flagged"].any()
    reason = motion.loc["sub-03", "reason"]
    assert "FD > 0.5 mm" in reason and "limit 30%" in reason
    conf = pd.read_csv(func_tree / "derivatives/fmriprep/sub-03/func/"
                       "sub-03_task-rest_desc-confounds_timeseries.tsv", sep="\t", na_values="n/a")
    fd = conf["framewise_displacement"].fillna(0.0)
    assert motion.loc["sub-03", "high_motion_fraction"] == pytest.approx((fd > 0.5).mean())
    assert motion.loc["sub-03", "mean_fd_mm"] == pytest.approx(fd.mean())
    assert ds.subjects == ["sub-01", "sub-02", "sub-03"]  # flagged, never dropped
    assert ds.series["sub-03"].shape == (120, 11)
    assert ds.region_names[:2] == ["hippocampus_l", "pcc_l"] and ds.networks[0] == "default_mode"
    np.testing.assert_allclose(ds.centroids_mm[0], [-48 + 2, -30 + 10, -10 + 10])  # slab centre


def test_cache_returns_identical_arrays_and_is_keyed_by_config(func_tree, tmp_path, monkeypatch):
    calls = []
    real = ts.extract_time_series
    monkeypatch.setattr(ts, "extract_time_series", lambda *a: calls.append(a[0].run_id) or real(*a))
    cache = tmp_path / "cache"
    first = load_func_dataset(func_tree, cache_dir=cache)
    assert len(calls) == 3
    again = load_func_dataset(func_tree, cache_dir=cache)
    assert len(calls) == 3  # all three from the cache
    for sid in first.subjects:
        np.testing.assert_array_equal(first.series[sid], again.series[sid])
    other = load_func_dataset(func_tree, config=SignalConfig(strategy="none"), cache_dir=cache)
    assert len(calls) == 6  # a changed strategy is recomputed …
    assert not np.allclose(other.series["sub-01"], first.series["sub-01"], atol=1e-3)
    assert len(list(cache.glob("func-*/*.npy"))) == 6  # … into its own entries
    assert not list(cache.rglob(".*tmp*"))  # atomic writes leave no temporary file
