"""Every fit leaves a run directory: manifest, metrics, per-subject rows, CSV and offline W&B
logs (without any network connection); resuming from last.ckpt continues the same run."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pandas as pd
import pytest

from cogimg.cli import main
from cogimg.tracking.provenance import data_fingerprint, file_sha256
from cogimg.tracking.run import resume_version
from tests.tasks.conftest import build_easy_stroke_tree

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "stroke" / "seg_unet.yaml"


@pytest.fixture(scope="module")
def tiny_tree(tmp_path_factory) -> Path:
    return build_easy_stroke_tree(tmp_path_factory.mktemp("tiny_stroke"), n=8)


def fit_args(root: Path, data: Path, steps: int, extra: tuple[str, ...] = ()) -> list[str]:
    return ["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(root),
            "--trainer.max_steps", str(steps), "--trainer.max_epochs", "10",
            "--trainer.limit_train_batches", "1", "--trainer.check_val_every_n_epoch", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--data.init_args.patch_size", "[24, 24, 24]",
            "--model.init_args.model_kwargs", '{"channels": [4, 8], "strides": [2], "num_res_units": 0}',
            "--data.init_args.samples_per_volume", "2", "--data.init_args.queue_length", "4",
            "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(root / "cache"),
            "--data.init_args.num_workers", "0", "--data.init_args.n_folds", "2",
            "--data.init_args.test_fraction", "0.2", *extra]


class NoRemoteSockets:
    """Records every socket connection; only loopback and Unix sockets are allowed (W&B's
    local service talks to its own process)."""

    def __init__(self, monkeypatch) -> None:
        self.remote: list = []
        original = socket.socket.connect

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
                self.remote.append(address)
                raise OSError(f"test forbids network access to {address}")
            return original(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.mark.slow  # two real (tiny) fits through the CLI: ~15 s idle
def test_fit_writes_run_directory_and_resume_continues_it(tiny_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("COGIMG_WANDB", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_home"))
    guard = NoRemoteSockets(monkeypatch)
    assert main(fit_args(tmp_path, tiny_tree, steps=2)) == 0
    run = tmp_path / "lightning_logs" / "version_0"

    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["experiment"] == "seg_unet" and manifest["model"] == "unet"
    assert manifest["seed"] == 0 and manifest["params"] > 0
    assert len(manifest["git"]["commit"] or "0" * 40) == 40
    assert manifest["packages"]["torch"] and manifest["packages"]["lightning"]
    assert manifest["data"]["sha256"] == data_fingerprint(tiny_tree)
    split = Path(manifest["data"]["split_file"])
    assert split.is_file() and manifest["data"]["split_sha256"] == file_sha256(split)
    assert manifest["config_files"] == {str(CONFIG): file_sha256(CONFIG)}
    assert manifest["device"]["accelerator"] == "CPUAccelerator"
    assert len(manifest["fits"]) == 1 and manifest["fits"][0]["global_step"] == 2
    assert manifest["wall_s"] > 0 and 0 < manifest["peak_memory_gb"] < 8 and manifest["status"] == "finished"

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert 0 <= metrics["val"]["val/dice"] <= 1 and metrics["global_step"] == 2
    subjects = pd.read_csv(run / "subjects_val.csv")
    assert subjects["dice"].mean() == pytest.approx(metrics["val"]["val/dice"], abs=1e-6)
    assert (run / "config.yaml").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))
    assert guard.remote == []

    # Resume: same run directory, same run id, one more fit entry, wall time adds up.
    last = run / "checkpoints" / "last.ckpt"
    assert resume_version(last) == 0
    assert main(fit_args(tmp_path, tiny_tree, steps=4, extra=("--ckpt_path", str(last)))) == 0
    assert not (tmp_path / "lightning_logs" / "version_1").exists()
    resumed = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert resumed["run_id"] == manifest["run_id"] and len(resumed["fits"]) == 2
    assert resumed["fits"][1]["resumed_from"] == str(last) and resumed["fits"][1]["global_step"] == 4
    # The time carried over is what the checkpoint recorded: the first fit's wall time less
    # what ran after its last checkpoint (a moment, but seconds on a loaded machine).
    carried = resumed["wall_s"] - resumed["fits"][1]["wall_s"]
    assert 0 < carried <= manifest["wall_s"] + 0.01
    assert carried == pytest.approx(manifest["wall_s"], rel=0.05, abs=0.5)
    assert json.loads((run / "metrics.json").read_text(encoding="utf-8"))["global_step"] == 4
    # The second fit got its own W&B run object (the first one was finished), with the same id.
    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(manifest["run_id"]) for r in runs)
    assert guard.remote == []


def test_resume_version_only_for_run_directories(tmp_path):
    assert resume_version(tmp_path / "lightning_logs" / "version_3" / "checkpoints" / "last.ckpt") == 3
    assert resume_version(tmp_path / "x.ckpt") is None and resume_version(None) is None
    assert resume_version("last") is None


def test_bad_wandb_mode_is_one_clear_error(tiny_tree, tmp_path, monkeypatch):
    monkeypatch.setenv("COGIMG_WANDB", "maybe")
    with pytest.raises(ValueError, match="COGIMG_WANDB='maybe'"):
        main(fit_args(tmp_path, tiny_tree, steps=1))


@pytest.mark.slow  # one real (tiny) fit through run_experiment
def test_run_experiment_result_matches_its_run_directory(tiny_tree, tmp_path, monkeypatch):
    """``run_experiment`` (used by ``cogimg demo``/``benchmark``, sweeps and benchmarks)
    reports the fit's own manifest numbers and the final validation in ``result.json``."""
    from cogimg.tracking.experiment import run_experiment

    monkeypatch.setenv("COGIMG_WANDB", "off")
    overrides = fit_args(tmp_path, tiny_tree, steps=3)[3:]  # drop "fit --config CONFIG"
    from lightning.pytorch.callbacks import Callback

    class CountValidations(Callback):
        def __init__(self) -> None:
            self.n = 0

        def on_validation_end(self, trainer, pl_module) -> None:
            self.n += not trainer.sanity_checking

    counter = CountValidations()
    result = run_experiment(CONFIG, tmp_path / "exp", overrides=overrides, name="tiny", callbacks=[counter])
    # one step per epoch, validated every epoch: fit's third validation is the final one,
    # reused instead of validating the same weights again
    assert counter.n == 3 and result.curve[-1]["step"] == 3
    saved = json.loads((tmp_path / "exp" / "result.json").read_text(encoding="utf-8"))
    manifest = json.loads((Path(result.run_dir) / "manifest.json").read_text(encoding="utf-8"))
    assert saved["name"] == "tiny" and saved["model"] == "unet" and saved["steps"] == 3
    assert saved["peak_memory_gb"] == manifest["peak_memory_gb"] and 0 < saved["peak_memory_gb"] < 8
    assert saved["params"] == manifest["params"] and saved["latency_s"] > 0
    subjects = pd.read_csv(tmp_path / "exp" / "subjects.csv")
    assert subjects["dice"].mean() == pytest.approx(saved["metrics"]["val/dice"], abs=1e-6)


def test_write_run_is_a_run_directory_the_leaderboard_and_figures_read(tmp_path):
    """A result no single fit recorded (a federated arm) becomes a finished run directory:
    scored on its test subjects, its round curve a learning curve, never overwritten."""
    from cogimg.tasks.segmentation import SegmentationTask
    from cogimg.tracking.figure_set import make_figures
    from cogimg.tracking.leaderboard import find_runs, leaderboard
    from cogimg.tracking.report import write_report
    from cogimg.tracking.run import write_run

    task = SegmentationTask("unet", in_channels=1, num_classes=2, patch_size=(16, 16, 16),
                            model_kwargs={"channels": [4, 8], "strides": [2], "num_res_units": 0})
    for seed, dice in ((0, [0.5, 0.7, 0.9]), (1, [0.4, 0.6, 0.8])):
        rows = [{"subject_id": f"s{i}", "dice": d, "site": "site-1"} for i, d in enumerate(dice)]
        write_run(tmp_path / "runs" / f"seed{seed}" / "fedavg", task, experiment="federated_stroke",
                  variant="fedavg", seed=seed, subjects={"test": rows}, metrics={"test": {"test/dice": 0.7}},
                  log=[{"epoch": r, "train/loss": 1 / (r + 1), "val/dice": 0.3 + 0.1 * r} for r in range(3)],
                  wall_s=12.5)
    folder = tmp_path / "runs" / "seed0" / "fedavg"
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["task"] == "cogimg.tasks.segmentation.SegmentationTask" and manifest["model"] == "unet"
    assert manifest["params"] == sum(p.numel() for p in task.parameters())
    assert (manifest["variant"], manifest["seed"], manifest["wall_s"], manifest["status"]) == ("fedavg", 0, 12.5, "finished")
    assert "commit" in manifest["git"] and manifest["packages"]["torch"]

    assert find_runs(tmp_path / "runs")[0] == []  # no validation table: the default stage finds none
    runs, skipped = find_runs(tmp_path / "runs", stage="test")
    assert len(runs) == 2 and not skipped
    row = leaderboard(runs).iloc[0]
    assert (row["experiment"], row["variant"], row["n_seeds"]) == ("federated_stroke", "fedavg", 2)
    assert row["dice_mean"] == pytest.approx(0.65) and row["dice_std"] == pytest.approx(0.0707107, abs=1e-6)
    assert row["train_s"] == pytest.approx(12.5)

    written, _ = make_figures(tmp_path / "runs", tmp_path / "figures", stage="test")
    assert {p.name for p in written} >= {"learning_curves_segmentation.png", "leaderboard_segmentation.png"}
    page = write_report(tmp_path / "runs", tmp_path / "report.html", figures_dir=tmp_path / "figures",
                        stage="test").read_text(encoding="utf-8")
    assert "2 finished run(s)" in page and "bootstrap over test subjects" in page
    with pytest.raises(FileExistsError, match="already records a run"):
        write_run(folder, task, experiment="x", variant="fedavg", seed=0, subjects={}, metrics={})


def test_write_run_without_a_lightning_module_takes_the_task_entries_from_its_caller(tmp_path):
    """Models fitted without a LightningModule (scikit-learn, once per fold): ``pl_module=None``
    with ``task``, ``kind`` and ``model`` given; the leaderboard scores the run like any other."""
    from cogimg.tracking.leaderboard import find_runs, leaderboard
    from cogimg.tracking.run import describe_task, write_run

    assert describe_task(None, "cv") == {"variant": "cv"}
    rows = [{"subject_id": f"s{i}", "target": t, "pred": p}
            for i, (t, p) in enumerate(zip([1, 2, 3, 4], [1, 2, 3, 5]))]
    with pytest.raises(ValueError, match=r"needs the manifest entries \['task', 'model'\]"):
        write_run(tmp_path / "runs" / "bad", None, experiment="x", variant="default", seed=0,
                  subjects={"val": rows}, metrics={}, kind="regression")
    assert not (tmp_path / "runs" / "bad").exists()  # refused before writing
    folder = write_run(tmp_path / "runs" / "ridge", experiment="outcome_ridge", variant="default",
                       seed=0, subjects={"val": rows}, metrics={"val": {"val/mae": 0.25}},
                       kind="regression", task="sklearn:ridge", model="ridge",
                       primary_metric="pearson_r", metric_mode="max")
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert {k: manifest[k] for k in ("task", "kind", "model", "variant", "primary_metric",
                                     "metric_mode", "status")} == {
        "task": "sklearn:ridge", "kind": "regression", "model": "ridge", "variant": "default",
        "primary_metric": "pearson_r", "metric_mode": "max", "status": "finished"}
    assert "params" not in manifest  # no module to count
    runs, skipped = find_runs(tmp_path / "runs")
    assert len(runs) == 1 and not skipped
    row = leaderboard(runs).iloc[0]
    # by hand: deviations (-1.5, -.5, .5, 1.5) and (-1.75, -.75, .25, 2.25): r = 6.5 / sqrt(5 * 8.75)
    assert row["pearson_r_mean"] == pytest.approx(6.5 / (5 * 8.75) ** 0.5)
    assert row["mae_mean"] == pytest.approx(0.25)
    assert row["params_M"] != row["params_M"]  # NaN: no parameter count recorded
