"""Ground truth of the synthetic cohort's functional effects (``cogimg synth --bold``).

Per subject, ``derivatives/groundtruth/sub-X/func/sub-X_task-rest_edges.tsv`` lists every
edge whose expected correlation a disease effect changed by at least 0.02: ``region_a``,
``region_b`` (parcellation names), ``effect`` (``ad``, ``pd`` or ``stroke``) and
``magnitude`` (healthy − affected expected correlation). An empty table means no edge was
perturbed (e.g. a control).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

GROUNDTRUTH_DIR = Path("derivatives") / "groundtruth"


def edges_path(root: str | Path, subject: str) -> Path:
    """Path of ``subject``'s perturbed-edge table under ``root``."""
    return Path(root) / GROUNDTRUTH_DIR / subject / "func" / f"{subject}_task-rest_edges.tsv"


def load_edge_truth(root: str | Path, subject: str) -> pd.DataFrame:
    """``subject``'s perturbed edges (columns ``region_a, region_b, effect, magnitude``).

    Raises:
        FileNotFoundError: the cohort has no functional ground truth for ``subject``.
    """
    path = edges_path(root, subject)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no edge ground truth (made by `cogimg synth --bold`)")
    return pd.read_csv(path, sep="\t", dtype={"region_a": str, "region_b": str, "effect": str})
