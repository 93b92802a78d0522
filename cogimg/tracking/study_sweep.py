"""Study runner ``sweep`` and figure kind ``pruning``: an Optuna sweep as one arm of a study.

An arm ``{runner: sweep, config: <experiment YAML>, options: {...}}`` runs
:func:`cogimg.tracking.sweep.run_sweep` over ``options``: ``space`` (a sweep file's
``space:``), ``objective`` (validation metric maximised, e.g. ``val/auroc``), ``n_trials``,
``sampler``, ``pruner`` (``{type: none}`` for the unpruned reference) and ``prune_metric``.
Every trial gets the arm's overrides (data, seed, sizes); ``--sweep.n_trials N`` among them
(e.g. in a preset's common overrides) replaces ``n_trials``. The trials live in
``out/sweeps/<arm>/seed<k>/`` (Optuna storage, ``trials.csv``, ``best.json``; an
interrupted sweep continues there); the arm's run directory ``run_dir/summary/`` holds the
best trial's per-subject validation rows and metrics (so comparisons pair the arms' best
trials on the same validation subjects) and in ``metrics.json["summary"]`` and
``trials.csv`` the sweep's record: per trial its state, value and validated epochs.

Figure kind ``pruning`` (:func:`pruning_table`): per sweep arm and seed, trials, trials
pruned, epochs in all, and the epochs spent — in trial order — until a finished trial first
reached the best value of the seed's unpruned arm (``pruner: {type: none}``); ``ratio`` is
that count over the unpruned arm's (``inf`` when the best is never reached), ``floor`` the
fewest any pruner judging trials against earlier ones could spend (:func:`floor_to_reach`).
Writes ``pruning.csv|md|png`` into the figures folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import yaml

from cogimg.io import atomic_write_text
from cogimg.tracking.study_registry import (
    StudyContext,
    arm_overrides,
    register_figure,
    register_runner,
    write_figure_table,
)

#: ``--sweep.n_trials N`` in an arm's overrides sets the trials (so a preset can shrink it);
#: it is taken out of the arguments the trials get.
SIZE_KEY = "--sweep.n_trials"
COLUMNS = ("arm", "seed", "pruner", "trials", "pruned", "epochs", "best_value", "reference_best",
           "epochs_to_best", "reference_epochs_to_best", "ratio", "floor", "seconds_to_best")


def trial_epochs(run_root: Path, metric: str) -> list[float]:
    """The trial's validation ``metric`` per trained epoch (its CSV log), ``[]`` without one."""
    logs = sorted(Path(run_root).glob("lightning_logs/*/metrics.csv"))
    if not logs:
        return []
    log = pd.read_csv(logs[-1])
    if metric not in log or "epoch" not in log:
        return []
    return [float(v) for v in log.loc[log[metric].notna()].groupby("epoch")[metric].first()]


def reaches(row: dict, target: float) -> bool:
    """Whether the trial ``row`` finished with a value ≥ ``target``."""
    return row["state"] == "COMPLETE" and row["value"] >= target - 1e-9


def epochs_to_reach(rows: list[dict], target: float) -> tuple[int, bool]:
    """Cumulative ``epochs`` of ``rows`` (trial order) until a finished trial's value ≥
    ``target``, and whether one did."""
    spent = 0
    for r in rows:
        spent += r["epochs"]
        if reaches(r, target):
            return spent, True
    return spent, False


def floor_to_reach(rows: list[dict], target: float) -> int:
    """The fewest epochs a pruner judging each trial against earlier ones could spend until a
    trial reaches ``target``: the first trial in full, every later one before the best stopped
    after one epoch, the best in full."""
    cut = [r if i == 0 or reaches(r, target) else {**r, "epochs": min(1, r["epochs"])}
           for i, r in enumerate(rows)]
    return epochs_to_reach(cut, target)[0]


def sweep_spec_text(arm: dict, seed: int, context: StudyContext) -> str:
    """The sweep file of one arm × seed (``options`` + the arm's overrides)."""
    options = dict(arm.get("options") or {})
    if not options.get("space") or not options.get("objective"):
        raise ValueError(f"arm {arm['name']!r}: runner 'sweep' needs options.space and options.objective")
    args, n_trials = arm_overrides(arm, seed, context), int(options.get("n_trials", 16))
    if SIZE_KEY in args:  # a size in the (preset's) common overrides wins over options
        at = args.index(SIZE_KEY)
        n_trials = int(args[at + 1])
        args = args[:at] + args[at + 2:]
    return yaml.safe_dump({
        "name": f"{arm['name']}_seed{seed}", "config": arm["config"],
        "objectives": [{"metric": options["objective"], "direction": "maximize"}],
        "n_trials": n_trials,
        "sampler": options.get("sampler", {"type": "random", "seed": seed}),
        "pruner": options.get("pruner", {"type": "none"}),
        "prune_metric": options.get("prune_metric") or options["objective"],
        "seed_everything": seed, "overrides": args,
        "space": options["space"]}, sort_keys=False)


@register_runner("sweep")
def sweep_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> Path:
    """Run the arm's sweep (module docstring) and write its summary run directory."""
    from cogimg.tracking.leaderboard import find_runs
    from cogimg.tracking.run import write_run
    from cogimg.tracking.sweep import run_sweep
    from cogimg.tracking.sweep_spec import load_sweep

    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'sweep' needs a config (an experiment YAML)")
    folder = Path(context.out) / "sweeps" / arm["name"] / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = atomic_write_text(folder / "sweep.yaml", sweep_spec_text(arm, seed, context))
    spec = load_sweep(spec_file)
    study = run_sweep(spec, folder, progress=False)
    metric = spec.prune_metric or spec.objectives[0][0]
    rows = []
    for t in sorted(study.trials, key=lambda t: t.number):
        root = Path(t.user_attrs.get("run_root", folder / "trials" / f"trial_{t.number:04d}"))
        seconds = t.duration.total_seconds() if t.duration is not None else float("nan")
        rows.append({"trial": t.number, "state": t.state.name,
                     "value": t.value if t.value is not None else float("nan"),
                     "epochs": len(trial_epochs(root, metric)), "seconds": seconds,
                     "run_dir": t.user_attrs.get("run_dir")})
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        raise RuntimeError(f"{folder}: no trial of the sweep finished")
    best = max(complete, key=lambda r: r["value"])
    best_runs, _ = find_runs(best["run_dir"], stage="val")
    if not best_runs:
        raise RuntimeError(f"{best['run_dir']}: the best trial left no finished run directory")
    run = best_runs[0]
    stages = {s: pd.read_csv(run.path / f"subjects_{s}.csv").to_dict("records")
              for s in context.stages if (run.path / f"subjects_{s}.csv").is_file()}
    summary = {"trials": len(rows), "pruned": sum(r["state"] == "PRUNED" for r in rows),
               "epochs": sum(r["epochs"] for r in rows), "best_trial": best["trial"],
               "best_value": best["value"], "objective": spec.objectives[0][0],
               "pruner": spec.pruner, "sweep": str(folder)}
    out = write_run(Path(run_dir) / "summary", None, experiment=arm["name"], variant="default",
                    seed=seed, subjects=stages,
                    metrics={**{k: v for k, v in run.metrics.items() if k in ("val", "test")},
                             "summary": summary},
                    task=run.manifest.get("task"), kind=run.kind, model=run.manifest.get("model"),
                    wall_s=round(sum(r["seconds"] for r in rows if math.isfinite(r["seconds"])), 1))
    atomic_write_text(out / "trials.csv", pd.DataFrame(rows).to_csv(index=False))
    return out


def _sweep_record(out: Path, arm: str, seed: str) -> tuple[dict, list[dict]] | None:
    folder = out / "runs" / arm / f"seed{seed}" / "summary"
    if not (folder / "trials.csv").is_file() or not (folder / "metrics.json").is_file():
        return None
    summary = json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("summary", {})
    return summary, pd.read_csv(folder / "trials.csv").to_dict("records")


def pruning_table(out: str | Path, study: dict) -> pd.DataFrame:
    """One row per sweep arm × seed (module docstring; columns :data:`COLUMNS`)."""
    out = Path(out)
    sweeps = [a for a in study["arms"] if a.get("runner") == "sweep"]
    rows = []
    for seed in map(str, study.get("seeds", [])):
        records = {a["name"]: _sweep_record(out, a["name"], seed) for a in sweeps}
        reference = next((records[a["name"]] for a in sweeps if records[a["name"]]
                          and ((a.get("options") or {}).get("pruner") or {"type": "none"})["type"] == "none"),
                         None)
        for arm in sweeps:
            record = records[arm["name"]]
            if record is None:
                continue
            summary, trials = record
            row = {"arm": arm["name"], "seed": seed, "pruner": (summary.get("pruner") or {}).get("type"),
                   "trials": len(trials), "pruned": sum(t["state"] == "PRUNED" for t in trials),
                   "epochs": sum(int(t["epochs"]) for t in trials), "best_value": summary.get("best_value")}
            if reference is not None:
                target = float(reference[0]["best_value"])
                spent, reached = epochs_to_reach(trials, target)
                plain, _ = epochs_to_reach(reference[1], target)
                seconds = sum(t["seconds"] for t in trials[:[reaches(t, target) for t in trials].index(True) + 1]) \
                    if reached else float("nan")
                row.update(reference_best=target, epochs_to_best=spent if reached else float("nan"),
                           reference_epochs_to_best=plain,
                           ratio=spent / max(plain, 1) if reached else float("inf"),
                           floor=floor_to_reach(reference[1], target) / max(plain, 1),
                           seconds_to_best=seconds)
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def pruning_markdown(table: pd.DataFrame) -> str:
    """The pruning table as Markdown."""
    def cell(v) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


@register_figure("pruning")
def pruning_figure(out: Path, study: dict, figures_dir: Path) -> list[Path]:
    """``pruning.csv|md|png``: epochs to reach the unpruned best, per sweep arm and seed."""
    import matplotlib.pyplot as plt

    from cogimg.tracking import figures

    table = pruning_table(out, study)
    if table.empty:
        return []
    note = ("\nratio: epochs (trial order) until a trial reaches the unpruned arm's best value, "
            "over the unpruned arm's; floor: the least any pruner could spend.\n")
    figures_dir = write_figure_table(figures_dir, "pruning", table, pruning_markdown(table) + note)
    fig, ax = plt.subplots(figsize=(figures.ONE_COLUMN_IN, 0.6 + 0.35 * len(table)))
    labels = [f"{a} seed {s}" for a, s in zip(table["arm"], table["seed"])]
    ax.barh(range(len(table)), table["epochs"], color=figures.OKABE_ITO[5], label="epochs in all")
    ax.barh(range(len(table)), table["epochs_to_best"].fillna(0), color=figures.OKABE_ITO[0],
            height=0.4, label="epochs to the unpruned best")
    ax.set_yticks(range(len(table)), labels)
    ax.set_xlabel("training epochs")
    ax.legend(frameon=False, fontsize="small")
    return [figures.save_figure(fig, figures_dir / "pruning")]
