"""Result files of the leave-site-out protocol (:mod:`cogimg.paradigms.adaptation.protocol`).

In ``out_dir``:

* ``lso_results.csv``: :meth:`~cogimg.paradigms.adaptation.protocol.LeaveSiteOut.run`'s rows,
  one per held-out site, variant and scope (``site, variant, scope, metric, value, ci_low,
  ci_high, n``), floats to 4 decimals;
* ``lso_summary.csv``: :func:`~cogimg.paradigms.adaptation.recovery.recovery_table` of those
  rows (means over sites and the share of the in→out drop each variant recovers);
* ``lso_subjects.csv`` (when subject rows are given): one row per scored subject
  (``site, variant, scope, subject_id, value`` [, ``label``], ``seed``), floats to 6
  decimals, the input of
  :func:`~cogimg.paradigms.adaptation.recovery.paired_recovery_bootstrap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS, SUMMARY, SUBJECTS = "lso_results.csv", "lso_summary.csv", "lso_subjects.csv"


def refuse_existing(out_dir: str | Path, overwrite: bool = False) -> None:
    """Raise :class:`FileExistsError` naming the first result file already in ``out_dir``,
    unless ``overwrite`` (call it before a run, so that a run is not wasted)."""
    if overwrite:
        return
    for name in (RESULTS, SUMMARY, SUBJECTS):
        if (Path(out_dir) / name).exists():
            raise FileExistsError(f"{Path(out_dir) / name} exists; pass --overwrite or choose "
                                  "another --out")


def tables(rows: Sequence[dict[str, Any]]) -> tuple[Any, Any]:
    """``(results, summary)`` DataFrames of the protocol's per-site ``rows``."""
    import pandas as pd

    from cogimg.paradigms.adaptation.recovery import recovery_table

    return pd.DataFrame(rows), pd.DataFrame(recovery_table(rows))


def write_leave_site_out(rows: Sequence[dict[str, Any]],
                         subject_rows: Sequence[dict[str, Any]] | None, out_dir: str | Path,
                         overwrite: bool = False, seed: int | None = None) -> dict[str, Path]:
    """Write the result files (module docstring) of one protocol run into ``out_dir``.

    Args:
        rows: :meth:`LeaveSiteOut.run`'s rows (one per site, variant and scope).
        subject_rows: its ``subject_rows``; ``None`` or empty: no ``lso_subjects.csv``.
        out_dir: folder (created).
        overwrite: replace existing result files (otherwise :class:`FileExistsError`).
        seed: the training seed, written as the subject table's ``seed`` column.

    Returns ``{"results": path, "summary": path[, "subjects": path]}``.
    """
    import pandas as pd

    from cogimg.io import atomic_write_text

    out_dir = Path(out_dir)
    refuse_existing(out_dir, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, summary = tables(rows)
    paths = {"results": out_dir / RESULTS, "summary": out_dir / SUMMARY}
    atomic_write_text(paths["results"], results.to_csv(index=False, float_format="%.4f"))
    atomic_write_text(paths["summary"], summary.to_csv(index=False, float_format="%.4f"))
    if subject_rows:
        paths["subjects"] = out_dir / SUBJECTS
        subjects = pd.DataFrame(subject_rows).assign(seed=seed)
        atomic_write_text(paths["subjects"], subjects.to_csv(index=False, float_format="%.6f"))
    return paths


def format_leave_site_out(rows: Sequence[dict[str, Any]]) -> str:
    """The results and summary tables of ``rows`` as text (floats to 3 decimals, 140 columns
    wide), separated by a blank line."""
    import pandas as pd

    results, summary = tables(rows)
    with pd.option_context("display.width", 140, "display.float_format", "{:.3f}".format):
        return f"{results.to_string(index=False)}\n\n{summary.to_string(index=False)}"
