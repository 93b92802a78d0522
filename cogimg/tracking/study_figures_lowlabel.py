"""Label-efficiency studies: the share of the label gap a method recovers (figure kind
``recovery_share``, registry :data:`cogimg.tracking.study_registry.FIGURES`).

Arms declare ``options: {label_fraction: f, method: m}`` (``method: supervised`` for the
supervised-only arms). For every arm of a method other than ``supervised`` at a fraction
``f`` below the study's largest fraction ``F``, with ``low`` the supervised arm at ``f`` and
``full`` the supervised arm at ``F``::

    share = (metric(arm) − metric(low)) / (metric(full) − metric(low))

(1 = the method closes the gap to the full labels, 0 = no gain, < 0 = it hurts). The metric
and stage are the study's first comparison's (else the kind's primary metric on ``val``).
As for the comparisons (:mod:`cogimg.tracking.study_stats`) each arm's per-subject rows of
all seeds are pooled (one entry per seed and subject) and the three arms are scored on the
entries they share; the 95 % interval is a percentile bootstrap over subjects (a subject
held out by two seeds is one cluster, stratified by the scorer's strata), resamples where the
gap is 0 left out; ``per_seed`` gives the share on each seed's entries alone.

Writes ``recovery_share.csv`` / ``.md`` (one row per method arm) and ``recovery_share.png``
(the share with its interval, per-seed shares as dots) into the figures folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.metrics.bootstrap import bootstrap_distribution, percentile_interval
from cogimg.tracking.leaderboard import KINDS
from cogimg.tracking.study_figures import figure_stage
from cogimg.tracking.study_registry import register_figure, write_figure_table
from cogimg.tracking.study_stats import arm_runs, pooled_table

COLUMNS = ("arm", "method", "label_fraction", "supervised_low", "supervised_full", "metric",
           "stage", "mean_low", "mean_arm", "mean_full", "share", "ci_low", "ci_high",
           "per_seed", "n_subjects", "n_entries", "seeds")


def recovery_share(low: float, arm: float, full: float) -> float:
    """``(arm − low) / (full − low)``; ``nan`` where ``full == low`` or a value is undefined."""
    gap = full - low
    if not all(map(math.isfinite, (low, arm, full))) or gap == 0:
        return float("nan")
    return (arm - low) / gap


def _metric(study: dict, kind) -> str:
    comparisons = study.get("comparisons") or []
    return comparisons[0]["metric"] if comparisons else kind.primary


def share_statistics(tables: dict[str, pd.DataFrame], kind: str, metric: str, n_boot: int = 2000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """The recovery share of ``tables["arm"]`` over ``tables["low"]`` towards
    ``tables["full"]`` (pooled tables of :func:`~cogimg.tracking.study_stats.pooled_table`)
    on the entries all three share: ``mean_low``, ``mean_arm``, ``mean_full``, ``share``,
    ``ci_low``, ``ci_high``, ``per_seed`` (``{seed: share}``), ``n_subjects``, ``n_entries``."""
    scorer_cls = KINDS[kind].scorer
    ids = np.array(sorted(set.intersection(*(set(t["subject_id"]) for t in tables.values()))))
    if ids.size == 0:
        raise ValueError("the arms share no (seed, subject) entry")
    scorers = {k: scorer_cls(t.drop(columns="cluster"), ids) for k, t in tables.items()}
    clusters = tables["low"].groupby("subject_id")["cluster"].first().loc[ids].to_numpy()

    def share(idx: np.ndarray | None) -> float:
        return recovery_share(*(scorers[k].score(metric, idx) for k in ("low", "arm", "full")))

    means = {k: scorers[k].score(metric) for k in ("low", "arm", "full")}
    resampled = bootstrap_distribution(share, ids.size, n_boot, seed,
                                       strata=scorers["low"].strata, groups=clusters)
    ci = percentile_interval(resampled, level)
    seeds = np.array([i.split(":", 1)[0] for i in ids])
    per_seed = {s: share(np.flatnonzero(seeds == s)) for s in sorted(set(seeds), key=str)}
    return {"mean_low": means["low"], "mean_arm": means["arm"], "mean_full": means["full"],
            "share": share(None), "ci_low": ci[0], "ci_high": ci[1], "per_seed": per_seed,
            "n_subjects": int(np.unique(clusters).size), "n_entries": int(ids.size)}


def recovery_table(out: str | Path, study: dict) -> pd.DataFrame:
    """One row per method arm (module docstring; columns :data:`COLUMNS`) from the run
    directories under ``out/runs``; empty when the study declares no such arms or none ran."""
    out = Path(out)
    arms = [(a["name"], (a.get("options") or {})) for a in study["arms"]]
    labelled = [(name, float(o["label_fraction"]), str(o.get("method", "supervised")))
                for name, o in arms if o.get("label_fraction") is not None]
    supervised = {f: name for name, f, m in labelled if m == "supervised"}
    if not supervised:
        return pd.DataFrame(columns=COLUMNS)
    top = max(supervised)
    rows = []
    for name, fraction, method in labelled:
        if method == "supervised" or fraction >= top or fraction not in supervised:
            continue
        names = {"low": supervised[fraction], "arm": name, "full": supervised[top]}
        stage = figure_stage(study)
        runs = {k: arm_runs(out, v, stage) for k, v in names.items()}
        if not all(runs.values()):
            continue
        kind = runs["low"][0].kind
        metric = _metric(study, KINDS[kind])
        tables = {k: pooled_table(r, out / "runs" / names[k]) for k, r in runs.items()}
        stats = share_statistics(tables, kind, metric, n_boot=int(study.get("n_boot", 2000)))
        per_seed = stats.pop("per_seed")
        rows.append({"arm": name, "method": method, "label_fraction": fraction,
                     "supervised_low": names["low"], "supervised_full": names["full"],
                     "metric": metric, "stage": stage, **stats,
                     "per_seed": " ".join(f"{s}:{v:+.3f}" for s, v in per_seed.items()),
                     "seeds": ",".join(per_seed)})
    return pd.DataFrame(rows, columns=COLUMNS)


def recovery_markdown(table: pd.DataFrame) -> str:
    """The recovery table as Markdown."""
    def fmt(v, spec="{:.3f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else spec.format(v)

    head = ["arm", "fraction", "metric", "stage", "supervised@low", "arm@low", "supervised@full",
            "share of the gap", "95% CI", "per seed", "n subjects"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join([
            str(r["arm"]), f"{r['label_fraction']:g}", r["metric"], r["stage"], fmt(r["mean_low"]),
            fmt(r["mean_arm"]), fmt(r["mean_full"]), fmt(r["share"], "{:+.0%}"),
            f"[{fmt(r['ci_low'], '{:+.0%}')}, {fmt(r['ci_high'], '{:+.0%}')}]",
            str(r["per_seed"]), fmt(r["n_subjects"], "{:.0f}")]) + " |")
    return ("\n".join(lines) + "\n\nShare = (arm − supervised@low) / (supervised@full − "
            "supervised@low), on the seeds' pooled entries; 95% CI: percentile bootstrap over "
            "subjects (a subject held out by several seeds is one cluster).\n")


@register_figure("recovery_share")
def recovery_share_figure(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    """``recovery_share.csv|md|png`` in ``figures_dir``; ``[]`` without method arms."""
    import matplotlib.pyplot as plt

    from cogimg.tracking import figures

    table = recovery_table(out, study)
    if table.empty:
        return []
    figures_dir = write_figure_table(figures_dir, "recovery_share", table, recovery_markdown(table))
    fig, ax = plt.subplots(figsize=(figures.ONE_COLUMN_IN, 0.5 + 0.4 * len(table)))
    for y, (_, r) in enumerate(table.iterrows()):
        low, high = r["ci_low"], r["ci_high"]
        if math.isfinite(low) and math.isfinite(high):
            ax.plot([low, high], [y, y], lw=1, color=figures.OKABE_ITO[0])
        ax.plot(r["share"], y, "o", ms=4, color=figures.OKABE_ITO[0])
        seeds = [float(p.split(":", 1)[1]) for p in str(r["per_seed"]).split()]
        ax.plot(seeds, [y] * len(seeds), "x", ms=3, color=figures.OKABE_ITO[1])
    ax.axvline(0, lw=0.5, color="grey")
    ax.axvline(1, lw=0.5, color="grey", ls=":")
    ax.set_yticks(range(len(table)), [f"{a} @ {f:g}" for a, f in zip(table["arm"], table["label_fraction"])])
    ax.set_xlabel(f"share of the label gap recovered ({table['metric'].iloc[0]}; x: per seed)")
    return [figures.save_figure(fig, figures_dir / "recovery_share")]
