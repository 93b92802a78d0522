"""LightningCLI entry for ``cogimg fit|validate|test --config experiments/….yaml``.

Configs name a task (``model:``) and a datamodule (``data:``) by ``class_path`` so that any
task or datamodule of cogimg — or a user's subclass — can be configured from YAML.
jsonargparse rejects unknown keys with an error naming them, so a typo in a config never
trains silently with a default.

Unless a config sets ``trainer.logger`` itself, every fit logs to a run directory
(:mod:`cogimg.tracking.run`): CSV always, W&B offline by default, and a
:class:`~cogimg.tracking.run.RunRecorder` that writes the manifest, final metrics and
per-subject tables. Fitting with ``--ckpt_path <run dir>/checkpoints/last.ckpt`` continues
that run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from cogimg.tracking.run import RunRecorder, default_loggers, resume_version


class CogimgCLI(LightningCLI):
    """LightningCLI with cogimg's defaults (seeded, subclass mode for tasks and datamodules,
    run directories)."""

    experiment_name: str | None = None
    resume_from: str | None = None

    def add_arguments_to_parser(self, parser) -> None:
        # Always keep last.ckpt (what `cogimg predict` and resuming use); configs may add a
        # monitored metric, e.g. `checkpoint: {monitor: val/dice, mode: max}`.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"seed_everything": 0, "checkpoint.save_last": True})

    def _instantiate_trainer(self, config: dict, callbacks: list) -> object:
        # Run directory: CSV (+ W&B) loggers and the run recorder, unless the config chose
        # its own logger or this is a smoke test (fast_dev_run disables loggers anyway).
        if config.get("logger") in (None, True) and not config.get("fast_dev_run"):
            sub = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
            files = [str(f) for f in (sub.get("config") or [])]
            experiment = self.experiment_name or (Path(files[-1]).stem if files else "run")
            ckpt = sub.get("ckpt_path") if self.subcommand == "fit" else self.resume_from
            root = config.get("default_root_dir") or "."
            config["logger"] = default_loggers(root, experiment, version=resume_version(ckpt))
            callbacks = [*callbacks, RunRecorder(experiment, seed=sub.get("seed_everything"),
                                                 config_files=files)]
        return super()._instantiate_trainer(config, callbacks)


def _cli(argv: list[str], run: bool, experiment: str | None = None,
         resume_from: str | None = None) -> CogimgCLI:
    # LightningCLI reads sys.argv (and warns when given both it and ``args``); the run names
    # are read while the classes are instantiated, inside the constructor.
    with mock.patch.object(sys, "argv", [sys.argv[0], *argv]), \
            mock.patch.multiple(CogimgCLI, experiment_name=experiment, resume_from=resume_from):
        return CogimgCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            run=run,
        )


def run_lightning_cli(argv: list[str]) -> CogimgCLI:
    """Run LightningCLI on ``argv`` (``["fit", "--config", "x.yaml", …]``)."""
    return _cli(argv, run=True)


def build_cli(argv: list[str], experiment: str | None = None,
              resume_from: str | None = None) -> CogimgCLI:
    """Parse a config (``["--config", "x.yaml", overrides…]``, no subcommand) and instantiate
    ``cli.trainer``, ``cli.model`` and ``cli.datamodule`` without running anything.

    ``experiment`` names the run (default: the config's stem); ``resume_from`` is the
    checkpoint the caller will pass to ``trainer.fit(ckpt_path=…)``, so that the loggers
    continue its run directory."""
    return _cli(argv, run=False, experiment=experiment, resume_from=resume_from)
