"""Leaderboards from run directories (``manifest.json`` + ``metrics.json`` + ``subjects_<stage>.csv``).

Runs are grouped by task kind (every kind of :data:`cogimg.tasks.TASKS`: segmentation,
classification, detection, regression …), experiment, model and variant; the seeds of a group
are its repeats. A row reports, for the kind's metrics (its task's ``leaderboard_metrics``),
the mean ± sample std **over seeds** of each run's metric, and a 95 % percentile bootstrap
interval **over subjects** of the seed-averaged metric (subjects resampled with replacement —
within each stratum of the kind's scorer, e.g. each true class for classification — the metric
recomputed on every seed's predictions for the same resample, then averaged over seeds). Then
the parameter count (M), training wall time (s), inference latency (s) and peak memory (GiB),
and the rank by the primary metric's mean within the kind, in the direction of its mode
(``max``: higher is better). Rendering lives in :mod:`cogimg.tracking.tables`.

Each run is re-scored from its per-subject rows by its task's
:class:`~cogimg.tasks.scoring.SubjectScorer`; nothing here knows a task class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.metrics.bootstrap import percentile_interval, resample_indices
from cogimg.tasks import TASKS, task_class
from cogimg.tasks.scoring import MeanScorer
from cogimg.tracking.run import MANIFEST, METRICS


@dataclass(frozen=True)
class Kind:
    """A task kind: its primary metric (ranked in the direction of ``mode``), secondary
    metrics, their labels and the scorer of its per-subject rows."""

    name: str
    primary: str
    secondary: tuple[str, ...]
    labels: dict[str, str] = field(default_factory=dict)
    mode: str = "max"
    scorer: type | None = None


#: Kinds of runs that score something already trained, so have no task class: ``explanation``
#: runs (:mod:`cogimg.tracking.study_explain`) hold one row per explained subject with the
#: faithfulness measures of :mod:`cogimg.paradigms.explain.faithfulness` — pointing game (1 where
#: the map's maximum lies in the ground-truth region), relevance mass (share of positive
#: saliency inside it), deletion AUC (lower is better), insertion AUC, seconds per map —
#: every one a subject mean, ranked by the pointing game.
SCORED_KINDS = {
    "explanation": Kind(
        "explanation", "pointing_game",
        ("relevance_mass", "deletion_auc", "insertion_auc", "seconds"),
        {"pointing_game": "pointing game", "relevance_mass": "relevance mass",
         "deletion_auc": "deletion AUC ↓", "insertion_auc": "insertion AUC ↑", "seconds": "s/map"},
        "max", MeanScorer),
}


def get_kind(name: str) -> Kind:
    """The :class:`Kind` of a task kind, from its task class's protocol (or
    :data:`SCORED_KINDS`)."""
    if name in SCORED_KINDS:
        return SCORED_KINDS[name]
    cls = task_class(name)
    metrics = cls.leaderboard_metrics or (cls.default_metric,)
    return Kind(name, metrics[0], tuple(metrics[1:]), dict(cls.metric_labels), cls.default_mode,
                cls.subject_scorer)


class _Kinds(Mapping):
    """``KINDS[name]``: every registered task kind, built on first use."""

    def __getitem__(self, name: str) -> Kind:
        if name not in TASKS and name not in SCORED_KINDS:
            raise KeyError(name)
        return get_kind(name)

    def __iter__(self):
        return iter([*TASKS, *SCORED_KINDS])

    def __len__(self) -> int:
        return len(TASKS) + len(SCORED_KINDS)


KINDS = _Kinds()
_KIND_OF_TASK = {path: kind for kind, path in TASKS.items()}
GROUP_KEYS = ("kind", "experiment", "model", "variant")


@dataclass
class Run:
    """One run directory with its records."""

    path: Path
    manifest: dict
    metrics: dict
    subjects: pd.DataFrame

    @property
    def kind(self) -> str:
        """The manifest's ``kind``; for runs written before it was recorded, the kind whose
        task class the manifest names."""
        task = self.manifest.get("task", "")
        return self.manifest.get("kind") or _KIND_OF_TASK.get(task, task)

    def key(self) -> tuple[str, ...]:
        m = self.manifest
        return (self.kind, str(m.get("experiment")), str(m.get("model")), str(m.get("variant", "default")))


def find_runs(root: str | Path, stage: str = "val") -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every run directory under ``root`` (a folder holding ``manifest.json``), and the ones
    left out with the reason (unfinished, no per-subject rows, unknown task kind, a corrupt
    or unreadable record)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs folder {root} does not exist")
    runs, skipped = [], []
    for manifest_path in sorted(root.rglob(MANIFEST)):
        folder = manifest_path.parent
        subjects_path = folder / f"subjects_{stage}.csv"
        if not (folder / METRICS).is_file():
            skipped.append((folder, "no metrics.json (unfinished run)"))
            continue
        if not subjects_path.is_file():
            skipped.append((folder, f"no {subjects_path.name}"))
            continue
        try:
            run = Run(folder, _read_json(manifest_path), _read_json(folder / METRICS),
                      pd.read_csv(subjects_path))
        except (ValueError, OSError, pd.errors.ParserError) as err:
            skipped.append((folder, f"unreadable: {err}"))
            continue
        if "subject_id" not in run.subjects:
            skipped.append((folder, f"{subjects_path.name} has no subject_id column"))
            continue
        status = run.manifest.get("status", "finished")
        if status != "finished":
            skipped.append((folder, f"status: {status}"))
            continue
        if run.kind not in KINDS:
            skipped.append((folder, f"task {run.manifest.get('task')!r} has no leaderboard kind"))
            continue
        runs.append(run)
    return runs, skipped


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path.name} is not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path.name} is not a JSON object")  # noqa: TRY004 (a corrupt file)
    return value


# ----------------------------------------------------------------------------- metrics
def group_statistics(runs: list[Run], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Statistics of one group of runs (the seeds of one experiment/model/variant).

    Seeds that share their evaluation subjects (the common ones are at least half of every
    seed's) are scored on the shared ones, and the CI resamples those subjects once for every
    seed (paired). Seeds whose splits differ (one split per seed, as studies make them; a chance
    overlap of a few subjects does not count) are each scored on their own subjects and the CI
    resamples each seed's subjects independently."""
    kind = KINDS[runs[0].kind]
    for r in runs:
        r.subjects["subject_id"] = r.subjects["subject_id"].astype(str)
    own = [np.array(sorted(set(r.subjects["subject_id"]))) for r in runs]
    common = np.array(sorted(set.intersection(*map(set, own))))
    if common.size * 2 < max(ids.size for ids in own):
        # splits that overlap by chance (one split per seed) are not a shared split: scoring
        # their few common subjects would throw most of each seed's subjects away
        common = np.array([], dtype=own[0].dtype)
    if not all(ids.size for ids in own):
        raise ValueError(f"runs {[str(r.path) for r in runs if r.subjects.empty]} hold no subject row")
    ids_per_run = [common] * len(runs) if common.size else own
    scores = [kind.scorer(r.subjects, ids) for r, ids in zip(runs, ids_per_run)]
    if common.size:
        resamples = [[idx] * len(runs) for idx in
                     resample_indices(common.size, n_boot, seed, strata=scores[0].strata)]
    else:
        resamples = list(zip(*(resample_indices(ids.size, n_boot, seed + i, strata=s.strata)
                               for i, (ids, s) in enumerate(zip(own, scores)))))
    row: dict = {"n_seeds": len(runs), "seeds": ",".join(str(r.manifest.get("seed")) for r in runs),
                 "n_subjects": len(set().union(*map(set, ids_per_run)))}
    for metric in (kind.primary, *kind.secondary):
        per_run = np.array([s.score(metric) for s in scores])
        if not np.isfinite(per_run).any():
            continue
        boot = np.array([_mean_defined([s.score(metric, idx) for s, idx in zip(scores, idxs)])
                         for idxs in resamples])
        low, high = percentile_interval(boot, level)
        row.update({f"{metric}_mean": float(np.nanmean(per_run)),
                    f"{metric}_std": float(np.nanstd(per_run, ddof=1)) if len(runs) > 1 else float("nan"),
                    f"{metric}_ci_low": float(low), f"{metric}_ci_high": float(high)})
    row.update(
        params_M=_mean([r.manifest.get("params") for r in runs]) / 1e6,
        train_s=_mean([r.manifest.get("wall_s") for r in runs]),
        latency_s=_mean([r.metrics.get("extra", {}).get("latency_s") for r in runs]),
        peak_memory_gb=float(np.max([_number(r.manifest.get("peak_memory_gb")) for r in runs])),
        run_dirs=";".join(str(r.path) for r in runs))
    return row


def _number(value) -> float:
    """A manifest number, ``nan`` where it is missing or ``null`` (e.g. no parameter count)."""
    return float("nan") if value is None else float(value)


def _mean(values: list) -> float:
    return float(np.mean([_number(v) for v in values]))


def _mean_defined(values: list[float]) -> float:
    """Mean of the finite values; ``nan`` (silently) when none is, e.g. HD95 of a resample
    holding only subjects without a lesion."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def leaderboard(runs: list[Run], n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (kind, experiment, model, variant), ranked by the primary metric's mean
    within each kind (see module docstring). Empty frame for no runs."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.key(), []).append(run)
    rows = [dict(zip(GROUP_KEYS, key), **group_statistics(group, n_boot=n_boot, seed=seed))
            for key, group in groups.items()]
    if not rows:
        return pd.DataFrame(columns=["rank", *GROUP_KEYS])
    table = pd.DataFrame(rows)
    kinds = {k: KINDS[k] for k in table["kind"].unique()}
    table["primary"] = table["kind"].map(lambda k: kinds[k].primary)
    sign = table["kind"].map(lambda k: 1.0 if kinds[k].mode == "max" else -1.0)
    table["primary_mean"] = sign * np.array([r.get(f"{p}_mean", np.nan) for p, (_, r)
                                             in zip(table["primary"], table.iterrows())], dtype=float)
    table = table.sort_values(["kind", "primary_mean", "experiment"], ascending=[False, False, True],
                              ignore_index=True, na_position="last")
    table.insert(0, "rank", table.groupby("kind").cumcount() + 1)
    return table.drop(columns=["primary_mean"])
