"""Active-learning studies: validation Dice against labelled participants, per strategy (figure
kind ``active_learning``, registry :data:`cogimg.tracking.study_registry.FIGURES`).

Reads each ``runner: active_learning`` arm's per-round curves
(``runs/<arm>/seed<k>/active_learning.csv``, :mod:`cogimg.tracking.study_active_learning`)
and writes into the figures folder:

- ``active_learning.csv``: one row per arm and number of labelled participants: ``arm``,
  ``strategy``, ``n_labelled``, ``mean_dice`` and ``std_dice`` (validation Dice over seeds,
  population SD), ``n_seeds``;
- ``active_learning.md``: that table and, per arm, the Dice gained per newly labelled
  participant (:func:`cogimg.paradigms.lowlabel.labels_gain`, mean over seeds: overall and
  in the first round);
- ``active_learning.png|pdf``: mean validation Dice (± SD over seeds) against the number of
  labelled participants, one line per arm.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cogimg.tracking.study_registry import register_figure, write_figure_table

CURVE = "active_learning.csv"
COLUMNS = ("arm", "strategy", "n_labelled", "mean_dice", "std_dice", "n_seeds")


def arm_curves(out: str | Path, study: dict) -> dict[str, pd.DataFrame]:
    """``{arm: its seeds' curves concatenated, with a ``seed`` column}`` of the study's
    ``active_learning`` arms that have at least one curve file."""
    curves = {}
    for arm in study["arms"]:
        if arm.get("runner") != "active_learning":
            continue
        tables = [pd.read_csv(path).assign(seed=path.parent.name.removeprefix("seed"))
                  for path in sorted((Path(out) / "runs" / arm["name"]).glob(f"seed*/{CURVE}"))]
        if tables:
            curves[arm["name"]] = pd.concat(tables, ignore_index=True)
    return curves


def curve_table(curves: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Mean and SD over seeds of the validation Dice per arm and labelled count (:data:`COLUMNS`)."""
    rows = []
    for arm, table in curves.items():
        for n, group in table.groupby("n_labelled", sort=True):
            rows.append({"arm": arm, "strategy": str(group["strategy"].iloc[0]), "n_labelled": int(n),
                         "mean_dice": float(group["val_dice"].mean()),
                         "std_dice": float(group["val_dice"].std(ddof=0)),
                         "n_seeds": int(group["seed"].nunique())})
    return pd.DataFrame(rows, columns=COLUMNS)


def gain_table(curves: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per arm: ``gain_per_label`` and ``first_round_gain_per_label`` (validation Dice per
    newly labelled participant, mean over seeds) and ``final_dice`` (mean over seeds)."""
    from cogimg.paradigms.lowlabel.active import labels_gain

    rows = []
    for arm, table in curves.items():
        gains = pd.DataFrame([labels_gain(g.sort_values("round").rename(columns={"val_dice": "metric"}))
                              for _, g in table.groupby("seed")])
        rows.append({"arm": arm, "strategy": str(table["strategy"].iloc[0]),
                     "gain_per_label": float(gains["gain_per_label"].mean()),
                     "first_round_gain_per_label": float(gains["first_round_gain_per_label"].mean()),
                     "final_dice": float(gains["final_metric"].mean()), "n_seeds": len(gains)})
    return pd.DataFrame(rows)


def active_markdown(curve: pd.DataFrame, gains: pd.DataFrame) -> str:
    """The curve and gain tables as Markdown."""
    def fmt(v: float, spec: str = "{:.3f}") -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else spec.format(v)

    lines = ["| arm | strategy | labelled | validation Dice | SD | seeds |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.arm} | {r.strategy} | {r.n_labelled} | {fmt(r.mean_dice)} | {fmt(r.std_dice)} "
              f"| {r.n_seeds} |" for r in curve.itertuples()]
    lines += ["", "| arm | strategy | Dice per labelled participant | first round | final Dice | seeds |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r.arm} | {r.strategy} | {fmt(r.gain_per_label, '{:+.4f}')} | "
              f"{fmt(r.first_round_gain_per_label, '{:+.4f}')} | {fmt(r.final_dice)} | {r.n_seeds} |"
              for r in gains.itertuples()]
    return "\n".join(lines) + "\n"


@register_figure("active_learning")
def active_learning_figure(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    """``active_learning.csv|md|png`` in ``figures_dir``; ``[]`` without curve files."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from cogimg.tracking import figures

    curves = arm_curves(out, study)
    if not curves:
        return []
    curve, gains = curve_table(curves), gain_table(curves)
    figures_dir = write_figure_table(figures_dir, "active_learning", curve,
                                     active_markdown(curve, gains))
    fig, ax = plt.subplots(figsize=(figures.ONE_COLUMN_IN, 2.6))
    for i, (arm, group) in enumerate(curve.groupby("arm", sort=False)):
        strategy = group["strategy"].iloc[0]
        ax.errorbar(group["n_labelled"], group["mean_dice"], yerr=group["std_dice"], fmt="o-", ms=3,
                    lw=1, capsize=2, color=figures.OKABE_ITO[i % 8],
                    label=arm if arm == strategy else f"{arm} ({strategy})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labelled participants")
    ax.set_ylabel("validation Dice (mean ± SD over seeds)")
    ax.legend(frameon=False, fontsize="small")
    return [figures.save_figure(fig, figures_dir / "active_learning")]
