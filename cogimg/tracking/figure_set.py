"""All figures of a runs folder: ``cogimg figures RUNS_DIR --out DIR``.

Reads run directories (:mod:`cogimg.tracking.leaderboard`; their validation subjects, or the
test subjects with ``--stage test``) and Optuna studies found under ``RUNS_DIR``
(``study.db``) and writes, as PNG + PDF:

* ``learning_curves_<kind>`` — the primary validation metric per epoch (CSV logger), one line
  per run;
* ``leaderboard_<kind>`` — dot plot of the primary metric's mean with 95 % CIs per group;
* ``dice_per_subject`` — per-subject Dice of each segmentation group (first seed);
* ``roc``, ``reliability``, ``confusion`` — classification groups (first seed);
* ``overlays_<experiment>`` — the best segmentation group's predictions on its best, median
  and worst subject (by Dice), from the run's last checkpoint and the
  preprocessed cache;
* ``connectome_groups_<preset>``, ``connectome_glass_<preset>`` — connectome runs
  (:mod:`cogimg.tracking.connectome_figures`);
* ``optuna_history_<study>``, ``optuna_importance_<study>``, ``optuna_pareto_<study>``.

A figure whose inputs are missing is skipped with the reason; the return value lists both.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.tracking import figures
from cogimg.tracking.leaderboard import KINDS, Run, find_runs, leaderboard
from cogimg.tracking.tables import stage_word


def _label(run: Run) -> str:
    m = run.manifest
    variant = m.get("variant", "default")
    return f"{m.get('experiment')}" + ("" if variant in ("default", "single") else f" ({variant})")


def _first_seed(runs: list[Run]) -> dict[str, Run]:
    groups: dict[str, Run] = {}
    for run in sorted(runs, key=lambda r: (str(r.manifest.get("seed")), str(r.path))):
        groups.setdefault(_label(run), run)
    return groups


def learning_curve_figures(runs: list[Run], out: Path) -> list[Path]:
    written = []
    for kind_name, kind in KINDS.items():
        curves = {}
        key = f"val/{kind.primary}"
        for run in (r for r in runs if r.kind == kind_name):
            csv = run.path / "metrics.csv"
            if not csv.is_file():
                continue
            log = pd.read_csv(csv)
            if key in log:
                rows = log.dropna(subset=[key])
                label = f"{_label(run)} s{run.manifest.get('seed')}"
                curves[label] = [{"epoch": int(e) + 1, key: float(v)} for e, v in zip(rows["epoch"], rows[key])]
        if curves:
            written.append(figures.learning_curves(
                curves, out / f"learning_curves_{kind_name}", key=key, label=f"validation {kind.labels[kind.primary]}",
                x="epoch", xlabel="epoch"))
    return written


def leaderboard_figures(table: pd.DataFrame, out: Path) -> list[Path]:
    written = []
    for kind_name, part in table.groupby("kind"):
        p = KINDS[kind_name].primary
        if f"{p}_mean" not in part:  # undefined for every group (e.g. R of constant predictions)
            continue
        names = [e if v in ("default", "single") else f"{e} ({v})" for e, v in zip(part["experiment"], part["variant"])]
        written.append(figures.dot_plot(names, part[f"{p}_mean"], part[f"{p}_ci_low"], part[f"{p}_ci_high"],
                                        out / f"leaderboard_{kind_name}", KINDS[kind_name].labels[p]))
    return written


def classification_figures(runs: list[Run], out: Path) -> list[Path]:
    from sklearn.metrics import auc, roc_curve

    firsts = _first_seed([r for r in runs if r.kind == "classification"])
    if not firsts:
        return []
    rocs, reliability, matrices, classes = {}, {}, {}, None
    for name, run in firsts.items():
        s = run.subjects
        prob_cols = [c for c in s.columns if c.startswith("prob_")]
        classes = [c.removeprefix("prob_") for c in prob_cols]
        prob = s[prob_cols].to_numpy(dtype=float)
        y = np.array([classes.index(v) for v in s["label"]])
        # The most severe class (last, e.g. AD) against the rest: the clinically read curve.
        fpr, tpr, _ = roc_curve(y == len(classes) - 1, prob[:, -1])
        rocs[name] = (fpr, tpr, auc(fpr, tpr))
        reliability[name] = (prob.max(axis=1), prob.argmax(axis=1) == y)
        cm = np.zeros((len(classes), len(classes)), dtype=int)
        np.add.at(cm, (y, prob.argmax(axis=1)), 1)
        matrices[name] = cm
    return [figures.roc_curves(rocs, out / "roc", title=f"{classes[-1]} vs. rest"),
            figures.reliability_diagram(reliability, out / "reliability"),
            figures.confusion_matrices(matrices, classes, out / "confusion")]


def segmentation_figures(runs: list[Run], table: pd.DataFrame, out: Path, skipped: list[str],
                         stage: str = "val") -> list[Path]:
    firsts = _first_seed([r for r in runs if r.kind == "segmentation"])
    if not firsts:
        return []
    written = [figures.per_subject_metric({n: r.subjects for n, r in firsts.items()}, out / "dice_per_subject",
                                          label=f"Dice per {stage_word(stage)} subject")]
    best = table[table["kind"] == "segmentation"].iloc[0]
    run = next(r for r in runs if r.kind == "segmentation" and r.manifest.get("experiment") == best["experiment"])
    try:
        written.append(_overlays(run, out / f"overlays_{best['experiment']}"))
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        skipped.append(f"overlays_{best['experiment']}: {err}")
    return written


def _overlays(run: Run, path: Path) -> Path:
    """Best / median / worst subject (by Dice) of ``run``'s table, predicted from its last
    checkpoint on the preprocessed cache the run trained from."""
    import torch
    import yaml

    from cogimg.data.cache import VolumeCache, load_entry
    from cogimg.diseases import get_preset
    from cogimg.inference import load_task, preprocessing_config

    ckpt, config_file = run.path / "checkpoints" / "last.ckpt", run.path / "config.yaml"
    if not ckpt.is_file() or not config_file.is_file():
        raise FileNotFoundError(f"{run.path} has no checkpoints/last.ckpt or no config.yaml")
    cache_dir = (yaml.safe_load(config_file.read_text(encoding="utf-8")).get("data") or {}).get("init_args", {}).get("cache_dir")
    if not cache_dir:
        raise KeyError(f"{config_file} sets no data.init_args.cache_dir (the preprocessed volumes)")
    ranked = run.subjects.dropna(subset=["dice"]).sort_values("dice", ascending=False).reset_index(drop=True)
    picks = {"best": 0, "median": len(ranked) // 2, "worst": len(ranked) - 1}
    task, data = load_task(ckpt)
    cache = VolumeCache(Path(cache_dir) / "volumes", preprocessing_config(data))
    label_keys = get_preset(data["preset"]).label_keys
    images, truths, preds = {}, {}, {}
    for which, i in picks.items():
        row = ranked.iloc[i]
        subject = load_entry(cache.entry_dir(str(row["subject_id"])))
        x = torch.cat([subject[m].data.float() for m in data["modalities"]])
        title = f"{which}: {row['subject_id']} (Dice {row['dice']:.2f})"
        with torch.no_grad():
            preds[title] = task.predict_volume(x[None])[0].argmax(0).numpy()
        images[title] = x[0].numpy()
        truths[title] = subject[next(k for k in label_keys if k in subject)].data.numpy()[0]
    return figures.segmentation_overlay(images, truths, preds, path, title=_label(run))


def optuna_figures(root: Path, out: Path, skipped: list[str]) -> list[Path]:
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    written = []
    for db in sorted(root.rglob("study.db")):
        storage = f"sqlite:///{db.resolve()}"
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            if not study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
                continue
            plots = ({"pareto": ovm.plot_pareto_front} if len(study.directions) > 1 else
                     {"history": ovm.plot_optimization_history, "importance": ovm.plot_param_importances})
            for name, plot in plots.items():
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
                        ax = plot(study)
                    fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                    fig.set_size_inches(figures.ONE_COLUMN_IN * 1.4, 2.8)
                    written.append(figures.save_figure(fig, out / f"optuna_{name}_{study.study_name}"))
                except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. importance of 1 trial
                    plt.close("all")
                    skipped.append(f"optuna_{name}_{study.study_name}: {err}")
    return written


def make_figures(runs_dir: str | Path, out: str | Path, stage: str = "val",
                 n_boot: int = 500) -> tuple[list[Path], list[str]]:
    """Every figure above for ``runs_dir``, the runs scored on their ``stage`` subjects
    (leaderboard CIs from ``n_boot`` resamples); returns (PNG paths written, skipped with
    reasons)."""
    runs_dir, out = Path(runs_dir), Path(out)
    runs, _ = find_runs(runs_dir, stage=stage)
    skipped: list[str] = []
    written: list[Path] = []
    if runs:
        table = leaderboard(runs, n_boot=n_boot)
        written += learning_curve_figures(runs, out)
        written += leaderboard_figures(table, out)
        written += classification_figures(runs, out)
        written += segmentation_figures(runs, table, out, skipped, stage)
        from cogimg.tracking.connectome_figures import connectome_run_figures

        written += connectome_run_figures(runs, out, skipped)  # connectome runs' groups
    else:
        skipped.append(f"run figures: no finished run directory under {runs_dir}")
    written += optuna_figures(runs_dir, out, skipped)
    from cogimg.tracking.study_figures import make_study_figures  # a study's own (study.yaml)

    written += make_study_figures(runs_dir, out, skipped)
    return written, skipped
