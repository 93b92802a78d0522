"""Resting-state functional MRI: BOLD runs (BIDS / fMRIPrep), parcellations, region time series.

:mod:`.atlas` (label image + region table), :mod:`.bold` (finding and checking runs),
:mod:`.timeseries` (confound regression with nilearn, motion summary, cache), :mod:`.checks`
(``cogimg check``'s functional section), :mod:`.truth` (synthetic perturbed-edge ground truth).
"""

from cogimg.data.func.atlas import Parcellation, ParcellationError
from cogimg.data.func.bold import (
    BoldRun,
    FuncDataError,
    default_parcellation,
    find_bold_runs,
    scan_func,
)
from cogimg.data.func.timeseries import (
    FuncDataset,
    SignalConfig,
    cached_time_series,
    extract_time_series,
    load_func_dataset,
    motion_summary,
)
from cogimg.data.func.truth import edges_path, load_edge_truth

__all__ = [
    "BoldRun",
    "FuncDataError",
    "FuncDataset",
    "Parcellation",
    "ParcellationError",
    "SignalConfig",
    "cached_time_series",
    "default_parcellation",
    "edges_path",
    "extract_time_series",
    "find_bold_runs",
    "load_edge_truth",
    "load_func_dataset",
    "motion_summary",
    "scan_func",
]
