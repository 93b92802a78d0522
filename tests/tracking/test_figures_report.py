"""Figures (PNG + PDF) and the HTML report from fabricated run directories and a toy study."""

from __future__ import annotations

import argparse

import matplotlib.image as mpimg
import optuna
import pandas as pd
import pytest

from cogimg.commands import figures as figures_command
from cogimg.tracking.benchmark import load_benchmark
from cogimg.tracking.figure_set import make_figures
from cogimg.tracking.report import write_report
from tests.tracking.test_leaderboard import CLS_TASK, cls_subjects, fake_run, seg_subjects


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    runs = [fake_run(root / "unet_s0", "seg_unet", "unet", 0, seg_subjects([0.9, 0.7, 0.8])),
            fake_run(root / "unet_s1", "seg_unet", "unet", 1, seg_subjects([0.8, 0.6, 0.7])),
            fake_run(root / "unetr_s0", "seg_unetr", "unetr", 0, seg_subjects([0.95, 0.85, 0.9])),
            fake_run(root / "cls_s0", "cls_resnet10", "resnet10_3d", 0, cls_subjects([0.2, 0.6, 0.7, 0.9]), task=CLS_TASK),
            fake_run(root / "late_s0", "fusion_late", "resnet10_3d", 0, cls_subjects([0.1, 0.3, 0.6, 0.8]),
                     task=CLS_TASK, variant="late")]
    for i, run in enumerate(runs):  # CSV-logger curves: one validation per epoch
        key = "val/dice" if "Cls" not in run.name and "cls" not in run.name and "late" not in run.name \
            else "val/balanced_accuracy"
        pd.DataFrame({"epoch": [0, 1, 2], "step": [5, 10, 15], key: [0.3, 0.5 + i / 50, 0.6 + i / 50]}
                     ).to_csv(run / "metrics.csv", index=False)
    study = optuna.create_study(study_name="toy", storage=f"sqlite:///{root / 'study.db'}", direction="maximize")
    study.optimize(lambda t: -(t.suggest_float("lr", 1e-4, 1e-2, log=True) - 3e-3) ** 2
                   + 0 * t.suggest_int("depth", 1, 4), n_trials=6)
    return root


def test_figures_written_readable_and_skips_explained(runs_dir, tmp_path):
    written, skipped = make_figures(runs_dir, tmp_path / "figs")
    names = {p.stem for p in written}
    assert {"learning_curves_segmentation", "learning_curves_classification", "leaderboard_segmentation",
            "leaderboard_classification", "dice_per_subject", "roc", "reliability", "confusion",
            "optuna_history_toy", "optuna_importance_toy"} <= names
    for png in written:
        assert png.suffix == ".png" and png.with_suffix(".pdf").stat().st_size > 1000
        height, width, _ = mpimg.imread(png).shape
        assert 200 < width < 3000 and 200 < height < 3000  # one/two-column sizes at 300 dpi
    assert any(s.startswith("overlays_seg_unetr") and "last.ckpt" in s for s in skipped)  # no checkpoint here


def test_figures_command_without_runs_fails(tmp_path):
    parser = argparse.ArgumentParser()
    figures_command.add_arguments(parser)
    (tmp_path / "empty").mkdir()
    assert figures_command.run(parser.parse_args([str(tmp_path / "empty")])) == 1


def test_report_page(runs_dir, tmp_path):
    page = write_report(runs_dir, tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count('<table class="leaderboard">') == 2
    assert '<img src="runs/figures/roc.png"' in page and 'href="runs/figures/roc.pdf"' in page
    assert page.count("<details>") == 5 and "seg_unetr · unetr · seed 0" in page


def test_quickstart_benchmark_file():
    spec = load_benchmark("experiments/quickstart.yaml")
    stems = [e["config"].rsplit("/", 1)[-1] for e in spec["experiments"]]
    assert sum(s.startswith("seg_") for s in stems) >= 3 and sum(s.startswith("cls_") for s in stems) >= 2
    assert any(s.startswith("fusion_") for s in stems) and len(spec["seeds"]) >= 2
    # sized in steps/epochs (reproducible on any machine), not in seconds
    assert all(e.get("budget_s") is None for e in spec["experiments"])
    assert all("--trainer.max_steps" in e["overrides"] or "--trainer.max_epochs" in e["overrides"]
               for e in spec["experiments"])
    full = load_benchmark("experiments/quickstart.yaml", full=True)
    assert all(e["budget_s"] is None and e["overrides"] == [] for e in full["experiments"])
    assert full["cohort"]["subjects"] > 120 and len(full["seeds"]) >= 3


def test_benchmark_file_errors(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_text("experiments: [{config: nope.yaml}]\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_benchmark(bad)
    bad.write_text("experimens: []\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown key"):
        load_benchmark(bad)
    bad.write_text("experiments: [{config: experiments/ad/cls_tabular.yaml, budget: 10}]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"cls_tabular.yaml.*unknown key\(s\) \['budget'\]"):
        load_benchmark(bad)
