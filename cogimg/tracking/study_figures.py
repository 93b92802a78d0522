"""Figure kinds a study can declare under ``figures:`` (registry :data:`cogimg.tracking.study_registry.FIGURES`).

Each reads the study's run directories (``out/runs/<arm>/seed<k>/``) and its resolved
``study.yaml`` only, and writes PNG + PDF into the figures folder:

* ``paired_differences`` — each comparison's difference b − a with its 95 % CI;
* ``froc`` — FROC curve (sensitivity vs false positives per scan, log axis) of every
  detection arm, scans of all seeds pooled, on the first comparison's stage (else ``val``),
  and ``froc.csv|md``: sensitivity at each standard rate and CPM per arm and compared stage;
* ``dice_vs_time`` — validation Dice against training wall time (``result.json`` curves),
  one line per arm × seed;
* ``label_fraction_curve`` — each arm's primary metric (mean ± std over seeds) against its
  ``options.label_fraction``, one line per ``options.method``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cogimg.tracking import figures
from cogimg.tracking.study_registry import register_figure, write_figure_table
from cogimg.tracking.study_stats import arm_runs, comparison_table


def _stages(study: dict) -> list[str]:
    """The stages the study's comparisons score, in order of first use (else ``["val"]``)."""
    return list(dict.fromkeys(c["stage"] for c in study.get("comparisons") or [])) or ["val"]


def figure_stage(study: dict) -> str:
    """The first comparison's stage (else ``val``): the stage a study figure draws."""
    return _stages(study)[0]


@register_figure("paired_differences")
def paired_differences(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    table = comparison_table(out, study).dropna(subset=["difference"])
    if table.empty:
        return []
    names = [f"{b} − {a} ({m})" for a, b, m in zip(table["arm_a"], table["arm_b"], table["metric"])]
    return [figures.dot_plot(names, table["difference"], table["ci_low"], table["ci_high"],
                             figures_dir / "paired_differences", "difference b − a")]


def _detection_matches(out: Path, arm: str, stage: str) -> tuple[int, list]:
    """``(seeds, ScanMatch per scan)`` of ``arm``'s detection runs on ``stage``, seeds pooled."""
    from cogimg.metrics.detection import match_from_row

    runs = [r for r in arm_runs(out, arm, stage) if r.kind == "detection"]
    return len(runs), [match_from_row(row) for r in runs for row in r.subjects.to_dict("records")]


def froc_table(out: Path, study: dict):
    """One row per stage of the comparisons × detection arm: ``arm, stage, seeds, scans,
    lesions``, the sensitivity at each rate of :data:`~cogimg.metrics.detection.FROC_FP_RATES`
    (``sens_<rate>fp``, false positives per scan) and ``cpm``, from the scans of all seeds
    pooled (one FROC over every (seed, scan)). Arms without a lesion on a stage are left out."""
    import pandas as pd

    from cogimg.metrics.detection import froc

    rows = []
    for stage in _stages(study):
        for arm in (a["name"] for a in study["arms"]):
            seeds, matches = _detection_matches(out, arm, stage)
            lesions = sum(m.n_targets for m in matches)
            if not lesions:
                continue
            scores = froc(matches)
            rows.append({"arm": arm, "stage": stage, "seeds": seeds, "scans": len(matches),
                         "lesions": lesions,
                         **{f"sens_{rate:g}fp": s for rate, s in scores["sensitivity"].items()},
                         "cpm": scores["cpm"]})
    return pd.DataFrame(rows)


def froc_markdown(table) -> str:
    rates = [c for c in table.columns if c.startswith("sens_")]
    head = ["arm", "stage", "seeds", "scans", "lesions",
            *(f"sens. @ {c[5:-2]} FP" for c in rates), "CPM"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.to_dict("records"):
        lines.append("| " + " | ".join([row["arm"], row["stage"], str(row["seeds"]), str(row["scans"]),
                                        str(row["lesions"]),
                                        *(f"{row[c]:.3f}" for c in rates), f"{row['cpm']:.3f}"]) + " |")
    return "\n".join(lines) + ("\n\nSensitivity at each rate of false positives per scan (linear "
                               "interpolation between operating points) and CPM, their mean, from one "
                               "FROC over the scans of all seeds.\n")


@register_figure("froc")
def froc(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    """The FROC curve of every detection arm on the first comparison's stage; the numbers of
    every compared stage go to ``froc.csv|md`` (:func:`froc_table`)."""
    import matplotlib.pyplot as plt

    from cogimg.metrics.detection import froc_curve

    table = froc_table(out, study)
    if table.empty:
        return []
    write_figure_table(figures_dir, "froc", table, froc_markdown(table))
    stage = figure_stage(study)
    fig, ax = plt.subplots(figsize=(figures.ONE_COLUMN_IN, 2.6))
    for i, arm in enumerate(a["name"] for a in study["arms"]):
        seeds, matches = _detection_matches(out, arm, stage)
        if not any(m.n_targets for m in matches):
            continue
        fps, sensitivity, _ = froc_curve(matches)
        keep = fps > 0
        ax.plot(fps[keep], sensitivity[keep], lw=1, color=figures.OKABE_ITO[i % 8],
                label=f"{arm} ({seeds} seed{'s' if seeds > 1 else ''})")
    ax.set_xscale("log")
    ax.set_xlim(1 / 8, 8)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.legend(frameon=False, fontsize="small")
    return [figures.save_figure(fig, figures_dir / "froc")]


@register_figure("dice_vs_time")
def dice_vs_time(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    import json

    curves = {}
    for arm in (a["name"] for a in study["arms"]):
        for result in sorted((out / "runs" / arm).glob("seed*/result.json")):
            points = json.loads(result.read_text(encoding="utf-8")).get("curve", [])
            if any("val/dice" in p for p in points):
                curves[f"{arm} {result.parent.name}"] = points
    if not curves:
        return []
    return [figures.learning_curves(curves, figures_dir / "dice_vs_time")]


@register_figure("label_fraction_curve")
def label_fraction_curve(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from cogimg.tracking.leaderboard import KINDS

    stage, points = figure_stage(study), []
    for arm in study["arms"]:
        fraction = (arm.get("options") or {}).get("label_fraction")
        runs = arm_runs(out, arm["name"], stage)
        if fraction is None or not runs:
            continue
        kind = KINDS[runs[0].kind]
        values = [kind.scorer(r.subjects, r.subjects["subject_id"].astype(str).unique()).score(kind.primary)
                  for r in runs]
        method = str((arm.get("options") or {}).get("method", ""))  # one line per method
        points.append((method, float(fraction), np.nanmean(values), np.nanstd(values),
                       kind.labels[kind.primary]))
    if not points:
        return []
    points.sort()
    fig, ax = plt.subplots(figsize=(figures.ONE_COLUMN_IN, 2.6))
    for i, method in enumerate(dict.fromkeys(p[0] for p in points)):
        _, x, mean, std, label = zip(*(p for p in points if p[0] == method))
        ax.errorbar(x, mean, yerr=std, fmt="o-", ms=3, lw=1, capsize=2,
                    color=figures.OKABE_ITO[i % 8], label=method or None)
    if any(p[0] for p in points):
        ax.legend(frameon=False, fontsize="small")
    ax.set_xlabel("fraction of training labels")
    ax.set_ylabel(f"{label[0]} (mean ± std over seeds)")
    return [figures.save_figure(fig, figures_dir / "label_fraction_curve")]


def make_study_figures(runs_dir: str | Path, figures_dir: str | Path,
                       skipped: list[str]) -> list[Path]:
    """The figures ``runs_dir/study.yaml`` declares (none for a plain runs folder); a figure
    whose inputs are missing is added to ``skipped`` with the reason."""
    from cogimg.tracking.study_registry import FIGURES, load_plugins
    from cogimg.tracking.study_spec import read_resolved

    load_plugins()
    study = read_resolved(runs_dir)
    if study is None:
        return []
    written = []
    for name in study.get("figures", []):
        if name not in FIGURES:
            skipped.append(f"{name}: not a registered study figure ({sorted(FIGURES)})")
            continue
        made = FIGURES[name](Path(runs_dir), study, Path(figures_dir))
        written += made
        if not made:
            skipped.append(f"{name}: no run of the study has its inputs")
    return written
