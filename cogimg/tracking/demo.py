"""The main job: synthesise the cohort → check it → train and compare architectures →
leaderboard + figures, all under one output folder.

    cogimg demo --out runs/demo

Layout of ``--out``: ``data/`` (the synthetic BIDS cohort), ``cache/`` (preprocessed volumes
and the saved split), ``runs/<model>/`` (Lightning logs, checkpoints, ``result.json``,
``subjects.csv``), ``leaderboard.md|csv`` and ``figures/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from cogimg.data.bids import load_dataset
from cogimg.data.cache import VolumeCache, load_entry
from cogimg.data.synth import generate_cohort
from cogimg.data.synth.preview import make_preview
from cogimg.diseases import get_preset
from cogimg.io import atomic_write_text
from cogimg.predict import load_task, preprocessing_config
from cogimg.tracking import figures
from cogimg.tracking.experiment import run_experiment
from cogimg.tracking.leaderboard import find_runs, leaderboard
from cogimg.tracking.tables import to_markdown, write_leaderboard

DEFAULT_MODELS = ("unet", "dynunet", "unetr")


def find_experiments(folder: str | Path | None) -> Path:
    """``experiments/stroke`` of the working directory, else of the source checkout."""
    candidates = [Path(folder)] if folder else [Path("experiments/stroke"),
                                                Path(__file__).resolve().parents[2] / "experiments/stroke"]
    for path in candidates:
        if (path / "seg_unet.yaml").is_file():
            return path
    raise FileNotFoundError(f"no segmentation experiments (seg_unet.yaml) in {[str(c) for c in candidates]}")


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = sorted(run_dir.glob("lightning_logs/version_*/checkpoints/*.ckpt"),
                   key=lambda p: p.stat().st_mtime)
    if not ckpts:
        raise FileNotFoundError(f"no checkpoint under {run_dir}")
    return ckpts[-1]


def run_demo(out: str | Path, subjects: int = 120, seed: int = 0, spacing_mm: float = 2.0,
             models: tuple[str, ...] = DEFAULT_MODELS, budget_s: float = 150.0,
             workers: int = 2, experiments: str | Path | None = None) -> pd.DataFrame:
    """Run the main job and return the leaderboard table (see module docstring)."""
    out = Path(out)
    data, cache, figs = out / "data", out / "cache", out / "figures"
    experiments = find_experiments(experiments)
    if not (data / "participants.tsv").is_file():
        print(f"[1/4] synthesising {subjects} subjects at {spacing_mm} mm → {data}")
        # More stroke cases than the generator's default share: this job compares segmenters.
        generate_cohort(data, subjects, seed, spacing_mm=spacing_mm, workers=workers,
                        proportions={"stroke": 0.35}, command="cogimg demo")
    make_preview(data, figs / "cohort_preview.png")
    dataset = load_dataset(data)  # strict: any problem stops the job with the full list
    counts = dataset.participants["diagnosis"].value_counts().to_dict()
    print(f"[2/4] cohort checked: {len(dataset.subjects)} subjects, {counts}, 0 errors")

    results = {}
    for i, name in enumerate(models, start=1):
        print(f"[3/4] training {name} ({i}/{len(models)}) for up to {budget_s:.0f} s")
        results[name] = run_experiment(
            experiments / f"seg_{name}.yaml", out / "runs" / name, name=name, budget_s=budget_s,
            overrides=["--data.init_args.data_root", str(data), "--data.init_args.cache_dir",
                       str(cache), "--trainer.max_epochs", "1000",
                       "--trainer.check_val_every_n_epoch", "1", "--seed_everything", str(seed)])
        print(f"      {name}: val Dice {results[name].metrics.get('val/dice', float('nan')):.3f} "
              f"after {results[name].train_s:.0f} s")

    print("[4/4] leaderboard and figures")
    runs, _ = find_runs(out / "runs")
    table = leaderboard(runs)
    write_leaderboard(table, out)
    figures.learning_curves({n: r.curve for n, r in results.items()}, figs / "dice_vs_time.png")
    figures.per_subject_metric({r.manifest["model"]: r.subjects for r in runs}, figs / "dice_per_subject.png")
    _overlay_figure(out, list(table["model"]), cache, figs / "predictions.png")
    atomic_write_text(out / "summary.json", json.dumps(
        {"cohort": {"subjects": len(dataset.subjects), "diagnoses": counts},
         "leaderboard": table.to_dict(orient="records")}, indent=2, default=float))
    print(to_markdown(table))
    print(f"wrote {out / 'leaderboard.md'} and figures in {figs}")
    return table


def _overlay_figure(out: Path, models: list[str], cache_dir: Path, path: Path) -> None:
    """Predictions of every model on the validation subject with the largest lesion."""
    first = pd.read_csv(out / "runs" / models[0] / "subjects.csv")
    sid = str(first.sort_values("volume_truth_ml").iloc[-1]["subject_id"])
    preds, image, truth = {}, None, None
    for name in models:
        task, data = load_task(latest_checkpoint(out / "runs" / name))
        entry = VolumeCache(cache_dir / "volumes", preprocessing_config(data)).entry_dir(sid)
        subject = load_entry(entry)
        x = torch.cat([subject[m].data.float() for m in data["modalities"]])
        preds[name] = task.predict_volume(x[None])[0].argmax(0).numpy()
        if image is None:
            image = x[0].numpy()
            label_key = next(k for k in get_preset(data["preset"]).label_keys if k in subject)
            truth = subject[label_key].data.numpy()[0]
    figures.segmentation_overlay(image, truth, preds, path, title=sid)
