"""LightningCLI entry for ``cogimg fit|validate|test --config experiments/….yaml``.

The CLI class (:class:`~cogimg.tracking.experiment_cli.CogimgCLI`: class-path configs, linked
task/datamodule values, run directories, the bf16 fallback) lives in
:mod:`cogimg.tracking.experiment_cli`, where :mod:`cogimg.tracking.experiment` builds it too;
this command module only runs it.
"""

from __future__ import annotations

from cogimg.tracking.experiment_cli import CogimgCLI, run_cli

__all__ = ["CogimgCLI", "run_lightning_cli"]


def run_lightning_cli(argv: list[str]) -> CogimgCLI:
    """Run LightningCLI on ``argv`` (``["fit", "--config", "x.yaml", …]``)."""
    return run_cli(argv)
