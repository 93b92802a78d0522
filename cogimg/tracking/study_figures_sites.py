"""Leave-site-out studies per held-out site: in-site, same-site, out-of-site, each variant and
the share of the drop each variant recovers (figure kind ``site_recovery``, registry
:data:`cogimg.tracking.study_registry.FIGURES`).

Inputs are the run directories of the study's ``runner: leave_site_out`` arms
(:mod:`cogimg.tracking.study_leave_site_out`): ``runs/<arm>/seed<k>/<site>/`` with
``subjects_test.csv`` (every subject of held-out site ``site``) and, for the baseline arm
(``options.variant: baseline``), ``subjects_val.csv`` (the in-site subjects: the held-out
share of the training sites' subjects, each row with its ``site``). Per seed ``k`` and held-out
site ``s``, each score is the metric (the study's first comparison's, else the task kind's
primary: balanced accuracy, mean Dice …) of the kind's scorer over:

* ``in_site``: the baseline's in-site rows of fold ``s`` (other sites' subjects);
* ``same_site``: site ``s``'s subjects in the *other* folds' in-site rows, each scored by the
  baseline of its fold (which trained on site ``s``; a subject in two folds counts twice) —
  the same population as ``s``'s out-of-site score, so ``same_site − out_of_site`` is not
  confounded by how hard site ``s``'s images are (``nan`` for in-site rows without ``site``);
* ``out_of_site``: the baseline's rows of fold ``s``; ``<variant>``: that arm's rows of fold ``s``.

A variant's recovered share is ``(variant − out_of_site) / (in_site − out_of_site)``
(``share_<variant>``) and ``(variant − out_of_site) / (same_site − out_of_site)``
(``share_same_<variant>``): 1 = back at the in-site level, 0 = no gain; ``nan`` where that drop
is not positive (nothing to recover). Row ``site = mean`` holds each score's mean over the
held-out sites and the shares of those means (as
:func:`cogimg.paradigms.adaptation.recovery.recovery_table`); with several seeds, rows
``seed = mean`` hold the scores' means over seeds and the shares of those means.

Writes ``site_recovery.csv`` / ``.md`` and ``site_recovery.png`` (the scores of every site and
their mean) into the figures folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.tracking.leaderboard import KINDS
from cogimg.tracking.study_registry import register_figure, write_figure_table
from cogimg.tracking.study_stats import arm_runs

SCORES = ("in_site", "same_site", "out_of_site")
MEAN = "mean"
#: {(seed, held-out site): per-subject rows} of one arm and stage
Folds = dict[tuple[str, str], pd.DataFrame]


def drop_share(variant: float, out: float, reference: float) -> float:
    """``(variant − out) / (reference − out)``; ``nan`` when the drop ``reference − out`` is
    not positive or a value is undefined."""
    drop = reference - out
    if not all(map(math.isfinite, (variant, out, reference))) or drop <= 0:
        return float("nan")
    return (variant - out) / drop


def score_rows(rows: pd.DataFrame, kind: str, metric: str) -> float:
    """``metric`` of per-subject ``rows`` by the kind's scorer (``nan`` without rows)."""
    if rows.empty:
        return float("nan")
    rows = rows.assign(subject_id=rows["subject_id"].astype(str))
    ids = np.array(sorted(set(rows["subject_id"])))
    return float(KINDS[kind].scorer(rows, ids).score(metric))


def same_site_rows(in_site: Folds, seed: str, site: str) -> pd.DataFrame:
    """Site ``site``'s subjects in the other folds' in-site rows of ``seed``, ids made
    ``"<fold>:<subject>"`` (a subject in two folds is two entries)."""
    parts = []
    for (k, fold), rows in in_site.items():
        if k != seed or fold == site or "site" not in rows:
            continue
        mine = rows[rows["site"].astype(str) == site]
        parts.append(mine.assign(subject_id=fold + ":" + mine["subject_id"].astype(str)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["subject_id"])


def add_shares(row: dict, variants: list[str]) -> dict:
    """``row`` with ``share_<v>`` and ``share_same_<v>`` of its scores (module docstring)."""
    for v in variants:
        row[f"share_{v}"] = drop_share(row[v], row["out_of_site"], row["in_site"])
    for v in variants:
        row[f"share_same_{v}"] = drop_share(row[v], row["out_of_site"], row["same_site"])
    return row


def site_table(in_site: Folds, out_of_site: Folds, variants: dict[str, Folds], kind: str,
               metric: str) -> pd.DataFrame:
    """One row per seed × held-out site, plus ``site = mean`` per seed and, with several
    seeds, ``seed = mean`` rows (module docstring). ``in_site`` / ``out_of_site``: the baseline's
    val / test rows per (seed, site); ``variants``: each variant arm's test rows. Columns:
    ``seed, site, metric, in_site, same_site, out_of_site, <variants>, share_<v>…,
    share_same_<v>…, n_in, n_same, n_out``."""
    names = list(variants)
    rows = []
    for seed, site in sorted(out_of_site, key=lambda k: (_seed_key(k[0]), k[1])):
        same = same_site_rows(in_site, seed, site)
        empty = pd.DataFrame(columns=["subject_id"])
        row = {"seed": seed, "site": site, "metric": metric,
               "in_site": score_rows(in_site.get((seed, site), empty), kind, metric),
               "same_site": score_rows(same, kind, metric),
               "out_of_site": score_rows(out_of_site[seed, site], kind, metric)}
        for v, folds in variants.items():
            row[v] = score_rows(folds.get((seed, site), empty), kind, metric)
        row = add_shares(row, names)
        row.update(n_in=len(in_site.get((seed, site), empty)), n_same=len(same),
                   n_out=len(out_of_site[seed, site]))
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    scores = [*SCORES, *names]
    means = []
    for seed, group in table.groupby("seed", sort=False):
        means.append(add_shares({"seed": seed, "site": MEAN, "metric": metric,
                                 **group[scores].mean(skipna=False).to_dict()}, names))
    table = pd.concat([table, pd.DataFrame(means)], ignore_index=True)
    if table["seed"].nunique() > 1:
        over = [add_shares({"seed": MEAN, "site": site, "metric": metric,
                            **group[scores].mean(skipna=False).to_dict()}, names)
                for site, group in table.groupby("site", sort=False)]
        table = pd.concat([table, pd.DataFrame(over)], ignore_index=True)
    return table


def _seed_key(seed: str) -> tuple:
    return (0, int(seed), "") if str(seed).isdigit() else (1, 0, str(seed))


def read_folds(out: Path, arm: str, stage: str) -> tuple[Folds, str | None]:
    """``({(seed, held-out site): rows}, task kind)`` of ``arm``'s run directories."""
    folds, kind = {}, None
    root = out / "runs" / arm
    for run in arm_runs(out, arm, stage):
        parts = run.path.relative_to(root).parts
        seed = parts[0].removeprefix("seed")
        site = (run.manifest.get("leave_site_out") or {}).get("held_out") or parts[-1]
        folds[seed, str(site)] = run.subjects
        kind = run.kind
    return folds, kind


def lso_arms(study: dict) -> tuple[str | None, list[str]]:
    """``(baseline arm, variant arms)`` of the study's ``runner: leave_site_out`` arms."""
    arms = [a for a in study.get("arms", []) if a.get("runner") == "leave_site_out"]
    baseline = next((a["name"] for a in arms
                     if (a.get("options") or {}).get("variant", "baseline") == "baseline"), None)
    return baseline, [a["name"] for a in arms if a["name"] != baseline]


def recovery_by_site(out: str | Path, study: dict) -> pd.DataFrame:
    """:func:`site_table` of the study's run directories (empty when no baseline ran)."""
    out = Path(out)
    baseline, names = lso_arms(study)
    if baseline is None:
        return pd.DataFrame()
    in_site, _ = read_folds(out, baseline, "val")
    out_of_site, kind = read_folds(out, baseline, "test")
    if kind is None:
        return pd.DataFrame()
    variants = {name: read_folds(out, name, "test")[0] for name in names}
    comparisons = study.get("comparisons") or []
    metric = comparisons[0]["metric"] if comparisons else KINDS[kind].primary
    return site_table(in_site, out_of_site, {k: v for k, v in variants.items() if v}, kind, metric)


def _fmt(value, spec: str = "{:.3f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else spec.format(value)


def recovery_markdown(table: pd.DataFrame) -> str:
    """Per seed: the scores by held-out site, then each variant's recovered shares."""
    variants = [c.removeprefix("share_") for c in table.columns
                if c.startswith("share_") and not c.startswith("share_same_")]
    metric = table["metric"].iloc[0]
    lines = []
    for seed, group in table.groupby("seed", sort=False):
        title = "mean over seeds" if seed == MEAN else f"seed {seed}"
        head = ["held-out site", "in-site", "same-site", "out-of-site", *variants]
        lines += [f"### {metric}, {title}", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for _, r in group.iterrows():
            lines.append("| " + " | ".join([str(r["site"]), *(_fmt(r[c]) for c in
                                                              [*SCORES, *variants])]) + " |")
        sites = list(group["site"])
        lines += ["", "| recovered share | " + " | ".join(sites) + " |",
                  "|" + "---|" * (len(sites) + 1)]
        for v in variants:
            for prefix, label in (("share_", "in→out"), ("share_same_", "same-site→out")):
                lines.append(f"| {v} ({label}) | " + " | ".join(
                    _fmt(x, "{:+.0%}") for x in group[f"{prefix}{v}"]) + " |")
        lines.append("")
    return ("\n".join(lines) + "\nShare = (variant − out-of-site) / (in-site − out-of-site) "
            "(in→out) or / (same-site − out-of-site) (same-site→out); – where the drop is not "
            "positive. The mean rows' shares are those of the means over sites (seeds).\n")


@register_figure("site_recovery")
def site_recovery_figure(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    """``site_recovery.csv|md|png`` in ``figures_dir``; ``[]`` without leave-site-out runs."""
    import matplotlib.pyplot as plt

    from cogimg.tracking import figures

    table = recovery_by_site(out, study)
    if table.empty:
        return []
    figures_dir = write_figure_table(figures_dir, "site_recovery", table, recovery_markdown(table))
    seed = MEAN if (table["seed"] == MEAN).any() else table["seed"].iloc[0]
    shown = table[table["seed"] == seed]
    columns = [*SCORES, *(c.removeprefix("share_") for c in table.columns
                          if c.startswith("share_") and not c.startswith("share_same_"))]
    fig, ax = plt.subplots(figsize=(figures.ONE_COLUMN_IN, 2.6))
    for i, (_, r) in enumerate(shown.iterrows()):
        mean = r["site"] == MEAN
        ax.plot(range(len(columns)), [r[c] for c in columns], "o-" if mean else ".--",
                lw=1.5 if mean else 0.8, color="black" if mean else figures.OKABE_ITO[i % 7],
                label=str(r["site"]))
    ax.set_xticks(range(len(columns)), [c.replace("_", "-") for c in columns], rotation=45,
                  ha="right")
    ax.set_ylabel(f"{table['metric'].iloc[0]} ({'mean over seeds' if seed == MEAN else f'seed {seed}'})")
    ax.legend(fontsize=6, title="held-out site", title_fontsize=6)
    return [figures.save_figure(fig, figures_dir / "site_recovery")]
