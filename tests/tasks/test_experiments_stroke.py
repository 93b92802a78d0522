"""Every shipped stroke segmentation experiment parses and runs a training and validation
step (``fast_dev_run``) on a tiny cohort, so no config can rot; unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cogimg import models
from cogimg.cli import main

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "stroke").glob("seg_*.yaml"))


def test_one_experiment_per_segmentation_model():
    names = {p.stem.removeprefix("seg_") for p in EXPERIMENTS}
    assert names == set(models.available("segmentation"))


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_experiment_runs(config, easy_stroke_tree, tmp_path):
    patch = "[64, 32, 32]" if "swinunetr" in config.stem else "[32, 32, 32]"
    assert main(["fit", "--config", str(config), "--trainer.fast_dev_run", "1",
                 "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar", "false",
                 "--data.init_args.patch_size", patch,
                 "--data.init_args.data_root", str(easy_stroke_tree),
                 "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--data.init_args.num_workers", "0"]) == 0


def test_unknown_config_key_is_an_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXPERIMENTS[0].read_text().replace("loss: dice_ce", "los: dice_ce"), encoding="utf-8")
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(bad), "--trainer.fast_dev_run", "1"])
    assert "los" in capsys.readouterr().err
