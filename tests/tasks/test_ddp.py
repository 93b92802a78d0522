"""DDP-exact evaluation: ``cogimg fit`` under ``torchrun`` with 2 CPU processes (gloo).

Every rank evaluates its shard of the validation subjects (the distributed sampler pads the
last shard with a repeated subject); the task gathers the rows, drops the repeats and scores
them once. So the run's ``subjects_val.csv`` holds every validation subject exactly once and
its metrics equal a one-process validation of the same checkpoint exactly; and in training
each subject is loaded by exactly one rank per epoch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cogimg.cli import main
from tests.tasks.conftest import build_easy_stroke_tree

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "stroke" / "seg_unet.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(data: Path, cache: Path, root: Path) -> list[str]:
    return ["--config", str(CONFIG), "--trainer.default_root_dir", str(root),
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.precision", "32-true",
            "--model.init_args.model_kwargs", '{"channels": [4, 8], "strides": [2], "num_res_units": 0}',
            "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(cache),
            "--data.init_args.spacing_mm", "4.0", "--data.init_args.patch_size", "[16, 16, 16]",
            "--data.init_args.samples_per_volume", "2", "--data.init_args.queue_length", "4",
            "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0",
            "--data.init_args.n_folds", "3", "--data.init_args.test_fraction", "0.2",
            "--data.init_args.augmentation", "none"]


@pytest.mark.slow  # two processes through torchrun: ~30 s on 2 cores
def test_ddp_validation_scores_every_subject_once_and_equals_one_process(tmp_path, monkeypatch):
    data = build_easy_stroke_tree(tmp_path / "bids", n=12)  # 6 train, 3 val (odd: padded), 3 test
    cache, probe = tmp_path / "cache", tmp_path / "probe"
    # Fill the cache once, in one process (the ranks would otherwise both write it).
    from cogimg.data.datamodules import PatchDataModule

    dm = PatchDataModule(data, preset="stroke", cache_dir=cache, spacing_mm=4.0, patch_size=(16, 16, 16),
                         n_folds=3, test_fraction=0.2, num_workers=0)
    dm.setup("fit")
    train_ids = {s["subject_id"] for s in dm.subjects["train"]}
    val_ids = {s["subject_id"] for s in dm.subjects["val"]}
    assert len(train_ids) % 2 == 0 and len(val_ids) % 2 == 1

    env = {**os.environ, "COGIMG_WANDB": "off", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "cogimg.cli", "fit", *_args(data, cache, tmp_path / "ddp"),
               "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
               "--trainer.max_epochs", "2", "--trainer.check_val_every_n_epoch", "2",
               "--trainer.callbacks+=tests.tasks.ddp_probe.TrainingSubjects",
               f"--trainer.callbacks.out={probe}"]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]

    # Training: each subject on exactly one rank, every epoch.
    for epoch in (0, 1):
        ranks = [set(json.loads((probe / f"rank{r}_epoch{epoch}.json").read_text())) for r in (0, 1)]
        assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == train_ids, (epoch, ranks)

    runs = sorted((tmp_path / "ddp").rglob("manifest.json"))
    assert len(runs) == 1, runs  # rank 0 alone wrote a run directory
    run = runs[0].parent
    rows = pd.read_csv(run / "subjects_val.csv")
    assert sorted(rows["subject_id"]) == sorted(val_ids)  # every subject once, the padding dropped
    ddp_metrics = json.loads((run / "metrics.json").read_text())["val"]

    monkeypatch.setenv("COGIMG_WANDB", "off")
    assert main(["validate", *_args(data, cache, tmp_path / "single"), "--trainer.accelerator", "cpu",
                 "--trainer.devices", "1", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]) in (0, None)
    single = next((tmp_path / "single").rglob("metrics.json"))
    single_metrics = json.loads(single.read_text())["val"]
    assert ddp_metrics == single_metrics  # exactly, metric by metric
    single_rows = pd.read_csv(single.parent / "subjects_val.csv")
    pd.testing.assert_frame_equal(rows, single_rows)
