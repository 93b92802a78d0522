"""Paper figures from experiment results (matplotlib, Agg backend, PNG at 150 dpi).

Every function reads results or run directories and writes one figure atomically; none
re-trains anything.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cogimg.io import atomic_path


def save_figure(fig, path: str | Path) -> Path:
    """Save ``fig`` to ``path`` through a temporary file (a crash leaves no partial PNG)."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:  # matplotlib picks the format from it
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


def learning_curves(curves: dict[str, list[dict]], path: str | Path, key: str = "val/dice",
                    label: str = "validation Dice") -> Path:
    """``key`` against training wall time (s), one line per model."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, points in curves.items():
        pts = [p for p in points if key in p]
        if pts:
            ax.plot([p["train_s"] for p in pts], [p[key] for p in pts], marker="o", ms=3, label=name)
    ax.set_xlabel("training wall time (s, validation excluded)")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    return save_figure(fig, path)


def per_subject_metric(tables: dict[str, pd.DataFrame], path: str | Path, metric: str = "dice",
                       label: str = "Dice per validation subject") -> Path:
    """Box plot + points of a per-subject metric, one box per model (sorted by median)."""
    order = sorted(tables, key=lambda n: -np.nanmedian(tables[n][metric]))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(order), 3.8))
    data = [tables[n][metric].dropna().to_numpy() for n in order]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=10, alpha=0.7, color="k")
    ax.set_xticks(range(1, len(order) + 1), order, rotation=20)
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def segmentation_overlay(image: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray],
                         path: str | Path, title: str = "") -> Path:
    """Axial slice through the largest lesion: image with ground truth (green) and each
    model's prediction (red) as contours. Arrays are (X, Y, Z) on one RAS grid."""
    z = int(np.argmax(truth.sum(axis=(0, 1)))) if truth.any() else image.shape[2] // 2
    fig, axes = plt.subplots(1, len(preds), figsize=(3.0 * len(preds), 3.4), squeeze=False)
    for ax, (name, pred) in zip(axes[0], preds.items()):
        ax.imshow(np.rot90(image[:, :, z]), cmap="gray")
        if truth[:, :, z].any():
            ax.contour(np.rot90(truth[:, :, z]), levels=[0.5], colors="lime", linewidths=1)
        if pred[:, :, z].any():
            ax.contour(np.rot90(pred[:, :, z]), levels=[0.5], colors="red", linewidths=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{title} (green: ground truth, red: prediction; slice z={z})", fontsize=9)
    return save_figure(fig, path)
