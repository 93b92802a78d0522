"""Leaderboard tables from run directories (``result.json`` + ``subjects.csv``).

A row per run: the primary metric as mean ± std over validation subjects with a subject-level
bootstrap 95% CI, the secondary ISLES'22 metrics, parameter count, training time, inference
latency and peak memory; ranked by the primary metric's mean. Written as Markdown and CSV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.io import atomic_write_text

SECONDARY = ("lesion_f1", "absolute_volume_difference_ml", "lesion_count_difference",
             "hausdorff95_mm")


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over subjects (NaNs dropped)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(n_boot, values.size), replace=True).mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def load_runs(run_dirs: list[Path]) -> list[tuple[dict, pd.DataFrame]]:
    """(result, per-subject table) of every run directory holding both files."""
    runs = []
    for d in run_dirs:
        result_file, subjects_file = Path(d) / "result.json", Path(d) / "subjects.csv"
        if result_file.is_file() and subjects_file.is_file():
            runs.append((json.loads(result_file.read_text()), pd.read_csv(subjects_file)))
    return runs


def leaderboard(runs: list[tuple[dict, pd.DataFrame]], primary: str = "dice") -> pd.DataFrame:
    """One ranked row per run (see module docstring)."""
    rows = []
    for result, subjects in runs:
        values = subjects[primary].to_numpy(dtype=float)
        low, high = bootstrap_mean_ci(values)
        row = {"model": result["name"], "params_M": round(result["params"] / 1e6, 2),
               f"{primary}_mean": np.nanmean(values), f"{primary}_std": np.nanstd(values, ddof=1),
               f"{primary}_ci_low": low, f"{primary}_ci_high": high, "n_subjects": len(values)}
        for key in SECONDARY:
            if key in subjects:
                row[key] = float(np.nanmean(subjects[key].to_numpy(dtype=float)))
        row.update(train_s=result["train_s"], latency_s=result["latency_s"],
                   peak_rss_gb=result["peak_rss_gb"])
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(f"{primary}_mean", ascending=False, ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def to_markdown(table: pd.DataFrame, primary: str = "dice") -> str:
    """A Markdown table: the primary metric as ``mean ± std [CI low, high]``."""
    headers = ["rank", "model", "params (M)", f"{primary} mean ± std [95% CI]", "lesion F1",
               "AVD (mL)", "ALD", "HD95 (mm)", "train (s)", "latency (s)", "peak RSS (GB)"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, r in table.iterrows():
        cells = [str(r["rank"]), r["model"], f"{r['params_M']:.2f}",
                 (f"{r[f'{primary}_mean']:.3f} ± {r[f'{primary}_std']:.3f} "
                  f"[{r[f'{primary}_ci_low']:.3f}, {r[f'{primary}_ci_high']:.3f}]"),
                 *(f"{r.get(k, float('nan')):.3f}" for k in SECONDARY),
                 f"{r['train_s']:.0f}", f"{r['latency_s']:.2f}", f"{r['peak_rss_gb']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_leaderboard(table: pd.DataFrame, out_dir: str | Path, primary: str = "dice") -> None:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "leaderboard.md", to_markdown(table, primary))
    atomic_write_text(out_dir / "leaderboard.csv", table.to_csv(index=False))
