"""A study's comparisons from its run directories: arm ``b`` − arm ``a`` with a paired CI.

For one comparison (``a``, ``b``, ``metric``, ``stage``) each arm's per-subject rows
(``subjects_<stage>.csv`` of every seed's run under ``runs/<arm>/seed<k>/``) are pooled over
seeds: an *entry* is one (seed, subject). Both arms are scored, by their task kind's
:class:`~cogimg.tasks.scoring.SubjectScorer`, on the entries they share; the statistic is
``metric(b) − metric(a)`` on those entries, and its 95 % interval a paired percentile
bootstrap (:func:`cogimg.metrics.bootstrap.paired_bootstrap`) that resamples *subjects*: a
subject held out by two seeds is one cluster (``groups``), stratified by the scorer's strata
(the true class for classification). For a metric that is a subject mean (Dice, MAE …) this
is :func:`~cogimg.metrics.bootstrap.paired_mean_ci` of the pooled per-entry values.

A side given as a list of arms is the best of them on the pooled metric (in the kind's
direction), as "best fusion vs best single modality".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.io import atomic_write_text
from cogimg.metrics.bootstrap import paired_bootstrap
from cogimg.tracking.leaderboard import KINDS, Run, find_runs

COLUMNS = ("comparison", "arm_a", "arm_b", "metric", "stage", "mean_a", "mean_b", "difference",
           "ci_low", "ci_high", "p_le_0", "n_subjects", "n_entries", "seeds")


def arm_runs(out: str | Path, arm: str, stage: str) -> list[Run]:
    """The finished runs of ``arm`` under ``out/runs/<arm>/`` scored on ``stage``, one per seed."""
    folder = Path(out) / "runs" / arm
    if not folder.is_dir():
        return []
    runs, _ = find_runs(folder, stage=stage)
    return runs


def _seed_of(run: Run, arm_root: Path) -> str:
    """``k`` of ``runs/<arm>/seed<k>/…`` (the manifest's seed for a folder named otherwise)."""
    first = run.path.relative_to(arm_root).parts[0]
    return first.removeprefix("seed") if first.startswith("seed") else str(run.manifest.get("seed"))


def pooled_table(runs: list[Run], arm_root: Path) -> pd.DataFrame:
    """Rows of every seed's run, ``subject_id`` made ``"<seed>:<subject>"`` (one entry per
    (seed, subject)) and the subject kept in ``cluster``."""
    parts = []
    for run in runs:
        rows = run.subjects.copy()
        seed = _seed_of(run, arm_root)
        rows["cluster"] = rows["subject_id"].astype(str)
        rows["subject_id"] = seed + ":" + rows["cluster"]
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def paired_difference(table_a: pd.DataFrame, table_b: pd.DataFrame, kind: str, metric: str,
                      n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """``metric(b) − metric(a)`` on the entries both pooled tables (:func:`pooled_table`)
    share, with the subject-clustered paired bootstrap interval (module docstring).

    Returns ``mean_a``, ``mean_b``, ``difference``, ``ci_low``, ``ci_high``, ``p_le_0`` (share
    of resamples where b − a ≤ 0), ``n_subjects`` (clusters), ``n_entries``."""
    scorer_cls = KINDS[kind].scorer
    ids = np.array(sorted(set(table_a["subject_id"]) & set(table_b["subject_id"])))
    if ids.size == 0:
        raise ValueError("the two arms share no (seed, subject) entry")
    a, b = scorer_cls(table_a.drop(columns="cluster"), ids), scorer_cls(table_b.drop(columns="cluster"), ids)
    clusters = table_a.groupby("subject_id")["cluster"].first().loc[ids].to_numpy()
    result = paired_bootstrap(lambda idx: b.score(metric, idx), lambda idx: a.score(metric, idx),
                              ids.size, n_boot, seed, level=level, strata=a.strata, groups=clusters)
    return {"mean_a": a.score(metric), "mean_b": b.score(metric), "difference": result["delta"],
            "ci_low": result["ci_low"], "ci_high": result["ci_high"],
            "p_le_0": result["p_le_0"],
            "n_subjects": int(np.unique(clusters).size), "n_entries": int(ids.size)}


def _best(out: Path, arms: list[str], metric: str, stage: str) -> str:
    """The arm of ``arms`` with the best pooled ``metric`` (kind's direction)."""
    scores = {}
    for arm in arms:
        runs = arm_runs(out, arm, stage)
        if not runs:
            continue
        table = pooled_table(runs, out / "runs" / arm)
        kind = KINDS[runs[0].kind]
        ids = np.array(sorted(set(table["subject_id"])))
        value = kind.scorer(table.drop(columns="cluster"), ids).score(metric)
        scores[arm] = value if kind.mode == "max" else -value
    finite = {k: v for k, v in scores.items() if math.isfinite(v)}
    if not finite:
        raise ValueError(f"none of the arms {arms} has a finished run with {metric!r} on {stage}")
    return max(finite, key=finite.get)


def comparison_table(out: str | Path, study: dict) -> pd.DataFrame:
    """One row per comparison of the resolved ``study`` (columns :data:`COLUMNS`), from the
    run directories under ``out/runs``; a comparison without finished runs of both arms is a
    row of ``nan`` naming the arms."""
    out = Path(out)
    rows = []
    for c in study.get("comparisons", []):
        a_arms = [c["a"]] if isinstance(c["a"], str) else list(c["a"])
        b_arms = [c["b"]] if isinstance(c["b"], str) else list(c["b"])
        name = c.get("name") or f"{'/'.join(b_arms)} − {'/'.join(a_arms)}"
        row = {"comparison": name, "metric": c["metric"], "stage": c["stage"]}
        try:
            arm_a = _best(out, a_arms, c["metric"], c["stage"])
            arm_b = _best(out, b_arms, c["metric"], c["stage"])
            runs_a, runs_b = (arm_runs(out, x, c["stage"]) for x in (arm_a, arm_b))
            if runs_a[0].kind != runs_b[0].kind:
                raise ValueError(f"{arm_a} ({runs_a[0].kind}) and {arm_b} ({runs_b[0].kind}) "
                                 "are different task kinds")
            stats = paired_difference(pooled_table(runs_a, out / "runs" / arm_a),
                                      pooled_table(runs_b, out / "runs" / arm_b), runs_a[0].kind,
                                      c["metric"], n_boot=int(study.get("n_boot", 2000)))
            seeds = sorted({_seed_of(r, out / "runs" / arm_a) for r in runs_a}
                           & {_seed_of(r, out / "runs" / arm_b) for r in runs_b}, key=str)
            row.update(arm_a=arm_a, arm_b=arm_b, **stats, seeds=",".join(seeds))
        except ValueError as err:
            row.update(arm_a="/".join(a_arms), arm_b="/".join(b_arms), note=str(err))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, "note"])


def _fmt(value, fmt: str = "{:.3f}") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def comparisons_markdown(table: pd.DataFrame) -> str:
    """The comparison table as Markdown (difference = b − a, 95 % CI paired over subjects)."""
    head = ["arm a", "arm b", "metric", "stage", "mean a", "mean b", "difference (b − a)",
            "95% CI", "n subjects", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        ci = (f"[{_fmt(r['ci_low'], '{:+.3f}')}, {_fmt(r['ci_high'], '{:+.3f}')}]"
              if pd.notna(r.get("ci_low")) else "–")
        lines.append("| " + " | ".join([
            str(r["arm_a"]), str(r["arm_b"]), r["metric"], r["stage"], _fmt(r.get("mean_a")),
            _fmt(r.get("mean_b")), _fmt(r.get("difference"), "{:+.3f}"), ci,
            _fmt(r.get("n_subjects"), "{:.0f}"), str(r.get("seeds") or "–")]) + " |")
    notes = [f"- {r['comparison']}: {r['note']}" for _, r in table.iterrows()
             if isinstance(r.get("note"), str)]
    text = "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "")
    return (text + "\n\nDifference b − a pooled over seeds (one entry per seed and subject); "
            "95% CI: paired percentile bootstrap over subjects (a subject held out by several "
            "seeds is one cluster).\n")


def write_study_tables(runs_dir: str | Path, out: str | Path) -> tuple[pd.DataFrame | None, dict[str, Path]]:
    """For a study's output folder ``runs_dir`` (one holding ``study.yaml``), its comparison
    table into ``out``; ``(None, {})`` for a plain runs folder."""
    from cogimg.tracking.study_spec import read_resolved

    study = read_resolved(runs_dir)
    if study is None or not study.get("comparisons"):
        return None, {}
    table = comparison_table(runs_dir, study)
    out = Path(out)
    return table, {"comparisons_md": atomic_write_text(out / "comparisons.md", comparisons_markdown(table)),
                   "comparisons_csv": atomic_write_text(out / "comparisons.csv", table.to_csv(index=False))}


def study_html(runs_dir: str | Path) -> list[str]:
    """HTML parts of a study's question and comparison table for the report (``[]`` for a
    plain runs folder)."""
    import html

    from cogimg.tracking.study_spec import read_resolved

    study = read_resolved(runs_dir)
    if study is None:
        return []
    parts = [f"<h2>Study: {html.escape(str(study.get('name')))}</h2>",
             (f"<p>{html.escape(str(study.get('question', '')))} (preset: "
             f"{html.escape(str(study.get('preset')))}; seeds {html.escape(str(study.get('seeds')))})</p>")]
    if study.get("comparisons"):
        table = comparison_table(runs_dir, study)
        shown = table[["arm_a", "arm_b", "metric", "stage", "mean_a", "mean_b", "difference",
                       "ci_low", "ci_high", "n_subjects", "seeds"]]
        parts += ["<h3>Comparisons (b − a)</h3>",
                  shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="–",
                                classes="leaderboard", border=0),
                  ("<p>Difference pooled over seeds; 95% CI: paired percentile bootstrap over "
                  "subjects (a subject held out by several seeds is one cluster).</p>")]
    return parts
