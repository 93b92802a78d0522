"""LightningCLI entry for ``cogimg fit|validate|test --config experiments/….yaml``.

Configs name a task (``model:``) and a datamodule (``data:``) by ``class_path`` so that any
task or datamodule of cogimg — or a user's subclass — can be configured from YAML.
jsonargparse rejects unknown keys with an error naming them, so a typo in a config never
trains silently with a default.
"""

from __future__ import annotations

import sys
from unittest import mock

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI


class CogimgCLI(LightningCLI):
    """LightningCLI with cogimg's defaults (seeded, subclass mode for tasks and datamodules)."""

    def add_arguments_to_parser(self, parser) -> None:
        # Always keep last.ckpt (what `cogimg predict` and resuming use); configs may add a
        # monitored metric, e.g. `checkpoint: {monitor: val/dice, mode: max}`.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"seed_everything": 0, "checkpoint.save_last": True})


def _cli(argv: list[str], run: bool) -> CogimgCLI:
    # LightningCLI reads sys.argv (and warns when given both it and ``args``).
    with mock.patch.object(sys, "argv", [sys.argv[0], *argv]):
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


def build_cli(argv: list[str]) -> CogimgCLI:
    """Parse a config (``["--config", "x.yaml", overrides…]``, no subcommand) and instantiate
    ``cli.trainer``, ``cli.model`` and ``cli.datamodule`` without running anything."""
    return _cli(argv, run=False)
