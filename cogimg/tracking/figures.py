"""Paper figures (matplotlib, Agg backend) with publication defaults.

Defaults: the Okabe–Ito colour-blind-safe palette, 8 pt text embedded as TrueType in PDFs
(``pdf.fonttype 42``: editable vector text), widths for one-column (3.5 in) and two-column
(7.2 in) figures, and every figure saved as PNG (300 dpi) **and** PDF, atomically. The
functions here draw from arrays and tables; :mod:`cogimg.tracking.figure_set` reads run
directories and Optuna studies and calls them. None re-trains anything.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from cogimg.io import atomic_path

#: Okabe & Ito (2008), distinguishable with every common colour-vision deficiency.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
ONE_COLUMN_IN, TWO_COLUMN_IN = 3.5, 7.2
STYLE = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
         "xtick.labelsize": 7, "ytick.labelsize": 7, "pdf.fonttype": 42, "ps.fonttype": 42,
         "svg.fonttype": "none", "axes.spines.top": False, "axes.spines.right": False,
         "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO), "savefig.dpi": 300,
         "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3}
plt.rcParams.update(STYLE)


def save_figure(fig, path: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> Path:
    """Save ``fig`` as ``path`` with each suffix in ``formats`` (through temporary files, so
    a crash leaves no partial file); returns the PNG path (or the first format's)."""
    path = Path(path)
    written = []
    for fmt in formats:
        target = path.with_suffix(f".{fmt}")
        with atomic_path(target, suffix=f".{fmt}") as tmp:  # matplotlib picks the format from it
            fig.savefig(tmp, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written[0]


def learning_curves(curves: dict[str, list[dict]], path: str | Path, key: str = "val/dice",
                    label: str = "validation Dice", x: str = "train_s",
                    xlabel: str = "training wall time (s, validation excluded)") -> Path:
    """``key`` against ``x`` (wall time or epoch), one line per name; curves are lists of
    ``{x: …, key: …}`` points."""
    fig, ax = plt.subplots(figsize=(ONE_COLUMN_IN, 2.6))
    for i, (name, points) in enumerate(curves.items()):
        pts = [p for p in points if key in p and x in p and np.isfinite(p[key])]
        if pts:
            ax.plot([p[x] for p in pts], [p[key] for p in pts], marker="o", ms=2.5, lw=1,
                    color=OKABE_ITO[i % len(OKABE_ITO)], label=name)
    ax.set_xlabel(xlabel)
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    # below the axes: with a few seeds per model, a legend inside covers the curves
    ax.legend(frameon=False, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
    return save_figure(fig, path)


def per_subject_metric(tables: dict[str, pd.DataFrame], path: str | Path, metric: str = "dice",
                       label: str = "Dice per validation subject") -> Path:
    """Box plot + points of a per-subject metric, one box per name (sorted by median)."""
    order = sorted(tables, key=lambda n: -np.nanmedian(tables[n][metric]))
    fig, ax = plt.subplots(figsize=(min(TWO_COLUMN_IN, 1.0 + 0.7 * len(order)), 2.6))
    data = [tables[n][metric].dropna().to_numpy() for n in order]
    ax.boxplot(data, showfliers=False, medianprops={"color": OKABE_ITO[3]})
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=6, alpha=0.7, color="k", lw=0)
    ax.set_xticks(range(1, len(order) + 1), order, rotation=30, ha="right")
    ax.set_ylabel(label)
    ax.set_ylim(0, 1)
    return save_figure(fig, path)


def dot_plot(names: list[str], means, lows, highs, path: str | Path, label: str) -> Path:
    """Means with 95 % CIs as horizontal error bars, best at the top."""
    order = np.argsort(means)
    fig, ax = plt.subplots(figsize=(ONE_COLUMN_IN, 0.6 + 0.28 * len(names)))
    y = np.arange(len(names))
    m, lo, hi = (np.asarray(v, dtype=float)[order] for v in (means, lows, highs))
    ax.errorbar(m, y, xerr=[np.clip(m - lo, 0, None), np.clip(hi - m, 0, None)], fmt="o", ms=4,
                color=OKABE_ITO[0], ecolor=OKABE_ITO[0], elinewidth=1, capsize=2)
    ax.set_yticks(y, [names[i] for i in order])
    ax.set_xlabel(f"{label} (mean, 95% CI)")
    ax.grid(axis="y", alpha=0)
    return save_figure(fig, path)


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str = "") -> Path:
    """ROC curves ``{name: (fpr, tpr, auc)}`` with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(ONE_COLUMN_IN, ONE_COLUMN_IN))
    for i, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        ax.plot(fpr, tpr, lw=1.2, color=OKABE_ITO[i % len(OKABE_ITO)], label=f"{name} (AUC {auc:.2f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.5")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(frameon=False, loc="lower right")
    return save_figure(fig, path)


def reliability_diagram(groups: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path,
                        bins: int = 5) -> Path:
    """Accuracy against confidence (max class probability) in equal-width bins, one line per
    name (``{name: (confidence (N,), correct (N,) bool)}``); the diagonal is calibration."""
    fig, ax = plt.subplots(figsize=(ONE_COLUMN_IN, ONE_COLUMN_IN))
    edges = np.linspace(0, 1, bins + 1)
    for i, (name, (conf, correct)) in enumerate(groups.items()):
        which = np.clip(np.digitize(conf, edges) - 1, 0, bins - 1)
        xs, ys = [], []
        for b in range(bins):
            if (which == b).any():
                xs.append(conf[which == b].mean())
                ys.append(correct[which == b].mean())
        ax.plot(xs, ys, marker="o", ms=3, lw=1, color=OKABE_ITO[i % len(OKABE_ITO)], label=name)
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="0.5")
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, loc="upper left")
    return save_figure(fig, path)


def confusion_matrices(matrices: dict[str, np.ndarray], classes: list[str], path: str | Path) -> Path:
    """Row-normalised confusion matrices (rows: true class), counts printed in the cells."""
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(min(TWO_COLUMN_IN, 2.2 * n), 2.4), squeeze=False)
    for ax, (name, cm) in zip(axes[0], matrices.items()):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (r, c), count in np.ndenumerate(cm):
            ax.text(c, r, str(count), ha="center", va="center", color="w" if norm[r, c] > 0.5 else "k")
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_title(name)
        ax.grid(False)
    axes[0][0].set_ylabel("true")
    return save_figure(fig, path)


def segmentation_overlay(image: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray],
                         path: str | Path, title: str = "") -> Path:
    """Axial slice through the largest lesion of each panel: image with ground truth (blue) and
    prediction (orange) contours. ``preds`` maps panel titles to ``(X, Y, Z)`` masks; ``image``
    and ``truth`` are ``(X, Y, Z)`` arrays, or dicts with the same keys as ``preds`` when the
    panels show different subjects."""
    fig, axes = plt.subplots(1, len(preds), figsize=(min(TWO_COLUMN_IN, 2.2 * len(preds)), 2.5), squeeze=False)
    for ax, (name, pred) in zip(axes[0], preds.items()):
        img = image[name] if isinstance(image, dict) else image
        gt = truth[name] if isinstance(truth, dict) else truth
        z = int(np.argmax(gt.sum(axis=(0, 1)))) if gt.any() else img.shape[2] // 2
        ax.imshow(np.rot90(img[:, :, z]), cmap="gray")
        if gt[:, :, z].any():
            ax.contour(np.rot90(gt[:, :, z]), levels=[0.5], colors=OKABE_ITO[0], linewidths=1)
        if pred[:, :, z].any():
            ax.contour(np.rot90(pred[:, :, z]), levels=[0.5], colors=OKABE_ITO[1], linewidths=1)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"{title} (blue: ground truth, orange: prediction)".strip())
    return save_figure(fig, path)
