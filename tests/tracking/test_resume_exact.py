"""Exact resume of a real ``cogimg fit``: killed with ``kill -9`` after a checkpoint exists, or
sent SIGUSR1 (SLURM's pre-emption warning, no SLURM needed) so that it checkpoints mid-epoch
and stops, then resumed with ``--ckpt_path last.ckpt``, the run ends with the uninterrupted
run's final metrics and per-subject rows exactly.

The runs use augmentation (per-item seeds), dropout (the global torch RNG) and a training
epoch of several batches, so each of the restored states matters. A test callback
(:class:`tests.tracking.resume_gate.Gate`) holds the interrupted processes after the first
batch of epoch 1 until the test has sent its signal, so the signal lands there (after the
epoch-0 checkpoint, mid-epoch) however fast the machine trains.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.tasks.conftest import build_easy_stroke_tree

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "stroke" / "seg_unet.yaml"
EPOCHS = 3
LAST = Path("lightning_logs") / "version_0" / "checkpoints" / "last.ckpt"


def _args(data: Path, cache: Path, root: Path) -> list[str]:
    return ["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(root),
            "--trainer.max_epochs", str(EPOCHS), "--trainer.check_val_every_n_epoch", "1",
            "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.precision", "32-true", "--trainer.log_every_n_steps", "1",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--model.init_args.model_kwargs",
            '{"channels": [4, 8], "strides": [2], "num_res_units": 0, "dropout": 0.2}',
            "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(cache),
            "--data.init_args.spacing_mm", "4.0", "--data.init_args.patch_size", "[16, 16, 16]",
            "--data.init_args.samples_per_volume", "2", "--data.init_args.queue_length", "4",
            "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
            "--data.init_args.n_folds", "3", "--data.init_args.test_fraction", "0.2",
            "--data.init_args.augmentation", "default"]


class Fits:
    """``cogimg fit`` processes on one tiny cohort, each in its own root folder."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.data = build_easy_stroke_tree(tmp_path / "bids", n=10)
        self.cache = tmp_path / "cache"
        self.env = {**os.environ, "COGIMG_WANDB": "off", "OMP_NUM_THREADS": "1",
                    "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}

    def start(self, name: str, *extra: str, hold: bool = False) -> subprocess.Popen:
        """A fit in ``<tmp>/<name>``; ``hold``: it waits at the gate until :meth:`release`."""
        root = self.tmp / name
        self.gate(name).mkdir(parents=True, exist_ok=True)
        if not hold:
            self.release(name)
        log = (root / f"log{len(list(root.glob('log*')))}.txt").open("w")
        gate = ["--trainer.callbacks+=tests.tracking.resume_gate.Gate",
                f"--trainer.callbacks.folder={self.gate(name)}"]
        return subprocess.Popen([sys.executable, "-m", "cogimg.cli",
                                 *_args(self.data, self.cache, root), *gate, *extra],
                                env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT)

    def gate(self, name: str) -> Path:
        return self.tmp / name / "gate"

    def release(self, name: str) -> None:
        (self.gate(name) / "go").touch()

    def wait_at_gate(self, name: str, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 240
        while not (self.gate(name) / "waiting").exists():
            assert process.poll() is None and time.monotonic() < deadline, self.log(name)
            time.sleep(0.02)

    def last(self, name: str) -> Path:
        return self.tmp / name / LAST

    def wait_for_checkpoint(self, name: str, process: subprocess.Popen) -> dict:
        """Poll (no fixed sleep) until the run's last.ckpt exists and reads whole."""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert process.poll() is None, self.log(name)
            if self.last(name).exists():
                with contextlib.suppress(Exception):  # still being written
                    return torch.load(self.last(name), map_location="cpu", weights_only=True)
            time.sleep(0.05)
        raise AssertionError(f"no checkpoint from {name}: {self.log(name)}")

    def log(self, name: str) -> str:
        return "\n".join(p.read_text(encoding="utf-8", errors="replace")[-3000:] for p in sorted((self.tmp / name).glob("log*")))

    def results(self, name: str) -> tuple[dict, pd.DataFrame]:
        run = self.tmp / name / "lightning_logs" / "version_0"
        assert json.loads((run / "manifest.json").read_text())["status"] == "finished"
        return (json.loads((run / "metrics.json").read_text())["val"],
                pd.read_csv(run / "subjects_val.csv"))


def _finish(process: subprocess.Popen, fits: Fits, name: str) -> None:
    assert process.wait(timeout=300) == 0, fits.log(name)


@pytest.mark.slow  # five tiny CLI fits, at most three at a time
def test_killed_or_preempted_fit_resumes_to_the_uninterrupted_numbers(tmp_path):
    fits = Fits(tmp_path)
    # Fill the cache and the split once, in one process (the fits would otherwise race).
    from cogimg.data.datamodules import PatchDataModule

    dm = PatchDataModule(fits.data, preset="stroke", cache_dir=fits.cache, spacing_mm=4.0,
                         patch_size=(16, 16, 16), n_folds=3, test_fraction=0.2)
    dm.setup("fit")
    batches = len(dm.subjects["train"]) * 2 // 2  # samples_per_volume 2, batch_size 2
    assert batches >= 4

    reference = fits.start("reference")
    killed, preempted = (fits.start(n, hold=True) for n in ("killed", "preempted"))
    at_kill = fits.wait_for_checkpoint("killed", killed)
    fits.wait_at_gate("killed", killed)
    killed.send_signal(signal.SIGKILL)  # mid-epoch 1, the last checkpoint from epoch 0's end
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert at_kill["epoch"] == 0 and torch.load(fits.last("killed"), weights_only=True)["epoch"] == 0

    fits.wait_at_gate("preempted", preempted)
    preempted.send_signal(signal.SIGUSR1)
    fits.release("preempted")
    assert preempted.wait(timeout=120) == 1, fits.log("preempted")
    assert "SIGUSR1: checkpoint saved to" in fits.log("preempted")
    at_signal = torch.load(fits.last("preempted"), map_location="cpu", weights_only=True)
    progress = at_signal["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert 0 < progress["processed"] < batches, progress  # saved mid-epoch
    manifest = json.loads((fits.last("preempted").parents[1] / "manifest.json").read_text())
    assert manifest["status"].startswith("interrupted (Preempted")

    fits.release("killed")
    resumed = [fits.start(name, "--ckpt_path", str(fits.last(name))) for name in ("killed", "preempted")]
    _finish(reference, fits, "reference")
    for process, name in zip(resumed, ("killed", "preempted")):
        _finish(process, fits, name)

    metrics, rows = fits.results("reference")
    assert "val/dice" in metrics and len(rows) >= 3  # scored at all
    for name in ("killed", "preempted"):
        resumed_metrics, resumed_rows = fits.results(name)
        assert resumed_metrics == metrics, name  # exactly, metric by metric
        pd.testing.assert_frame_equal(resumed_rows, rows, check_exact=True)
