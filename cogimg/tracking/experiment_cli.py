"""The LightningCLI that parses experiment YAMLs and fits into run directories.

Configs name a task (``model:``) and a datamodule (``data:``) by ``class_path`` so that any
task or datamodule of cogimg — or a user's subclass — can be configured from YAML.
jsonargparse rejects unknown keys with an error naming them, so a typo in a config never
trains silently with a default.

Unless a config sets ``trainer.logger`` itself, every fit logs to a run directory
(:mod:`cogimg.tracking.run`): CSV always, W&B offline by default, and a
:class:`~cogimg.tracking.run.RunRecorder` that writes the manifest, final metrics and
per-subject tables. Fitting with ``--ckpt_path <run dir>/checkpoints/last.ckpt`` continues
that run directory, exactly as the uninterrupted run would have gone on (random states, data
order and loop position are in the checkpoint); SIGUSR1 makes a fit checkpoint and stop
(:mod:`cogimg.tracking.preemption`, for SLURM requeueing).

``trainer.precision: bf16-mixed`` runs in bfloat16 where the device computes it natively (CUDA
with bf16, CPUs with AVX512-BF16 or AMX) and falls back, with a warning, to ``32-true`` where
it would be emulated and slower than float32 (:func:`effective_precision`); the run's manifest
records the precision actually used.

``cogimg fit|validate|test`` (:mod:`cogimg.lightning_cli`) and
:func:`cogimg.tracking.experiment.run_experiment` both build this CLI, so it sits in the
tracking layer, below the commands.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from unittest import mock

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from cogimg.tasks.config import add_run_arguments, check_no_linked_keys, link_experiment_arguments
from cogimg.tracking.preemption import Preemption
from cogimg.tracking.run import RunRecorder, default_loggers, resume_version


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu", "cuda") computes bfloat16 natively. On CPU that takes
    AVX512-BF16 or AMX, with which bf16-mixed training steps are faster than float32; without
    them oneDNN emulates bf16, slower than float32 (``benchmarks/model_step_time.py
    --variants default bf16`` measures it)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        cpu = torch.cpu
        return any(getattr(cpu, probe, lambda: False)()
                   for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return True  # other accelerators: Lightning decides


def effective_precision(precision, accelerator) -> object:
    """``precision`` unless it asks for bf16 on a device without native bf16: then ``"32-true"``
    (with a warning). ``accelerator`` "auto"/"gpu"/"cuda" means CUDA when one is present."""
    if not str(precision).startswith("bf16"):
        return precision
    if str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        device = "cuda"
    elif str(accelerator) in ("auto", "cpu"):
        device = "cpu"
    else:  # other accelerators, or a GPU that is missing: Lightning decides or reports
        return precision
    if native_bf16(device):
        return precision
    warnings.warn(f"trainer.precision {precision!r}: this {device.upper()} has no native bfloat16, "
                  "which would be emulated and slower than float32; using '32-true'", stacklevel=2)
    return "32-true"


class CogimgCLI(LightningCLI):
    """LightningCLI with cogimg's defaults (seeded, subclass mode for tasks and datamodules,
    run directories)."""

    experiment_name: str | None = None
    resume_from: str | None = None

    def add_arguments_to_parser(self, parser) -> None:
        # Always keep last.ckpt (what `cogimg predict` and resuming use); configs may add a
        # monitored metric, e.g. `checkpoint: {monitor: val/dice, mode: max}`. Values a task
        # shares with its datamodule are linked from the datamodule (cogimg.tasks.config).
        add_run_arguments(parser)
        link_experiment_arguments(parser)

    def parse_arguments(self, parser, args) -> None:
        # jsonargparse silently replaces a linked task key that a config gives: an error instead.
        if args is None or isinstance(args, (list, tuple)):
            try:
                check_no_linked_keys(parser, sys.argv[1:] if args is None else args)
            except ValueError as err:
                parser.error(str(err))
        super().parse_arguments(parser, args)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> object:
        config["precision"] = effective_precision(config.get("precision"), config.get("accelerator", "auto"))
        callbacks = [*callbacks, Preemption()]  # SIGUSR1: checkpoint, requeue on SLURM, stop
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


def enforce_import_paths() -> None:
    """Make jsonargparse's import-path denylist an error instead of a warning.

    A config's ``class_path`` (and any callable or type given as a value) is imported and
    instantiated: ``class_path: subprocess.Popen`` would run a command. jsonargparse denies
    such paths (``os``, ``subprocess``, ``pickle``, ``importlib`` …) but, unless a denylist or
    allowlist is set, only warns; an empty extra denylist keeps its defaults and enforces them.
    Every config this module parses (``cogimg fit``, sweeps, benchmarks) goes through it.
    """
    from jsonargparse import set_parsing_settings

    set_parsing_settings(import_path_denylist=[])


def _cli(argv: list[str], run: bool, experiment: str | None = None,
         resume_from: str | None = None) -> CogimgCLI:
    enforce_import_paths()
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


def run_cli(argv: list[str]) -> CogimgCLI:
    """Run LightningCLI on ``argv`` (``["fit", "--config", "x.yaml", …]``): what ``cogimg
    fit|validate|test`` do."""
    return _cli(argv, run=True)


def build_cli(argv: list[str], experiment: str | None = None,
              resume_from: str | None = None) -> CogimgCLI:
    """Parse a config (``["--config", "x.yaml", overrides…]``, no subcommand) and instantiate
    ``cli.trainer``, ``cli.model`` and ``cli.datamodule`` without running anything.

    ``experiment`` names the run (default: the config's stem); ``resume_from`` is the
    checkpoint the caller will pass to ``trainer.fit(ckpt_path=…)``, so that the loggers
    continue its run directory."""
    return _cli(argv, run=False, experiment=experiment, resume_from=resume_from)
