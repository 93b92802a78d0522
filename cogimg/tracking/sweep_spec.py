"""Sweep files (``sweeps/<name>.yaml``): a search space over LightningCLI experiment configs.

Example (``sweeps/stroke_seg.yaml``)::

    name: stroke_seg
    config: experiments/stroke/seg_unet.yaml      # base experiment (relative to the sweep
                                                  # file's repository, else the working dir)
    objectives:                                   # one = single-objective (prunable);
      - {metric: val/dice, direction: maximize}   # several = Pareto front
      - {metric: params_M, direction: minimize}
    n_trials: 20                                  # total over all workers (finished + pruned)
    budget_s: 120                                 # training wall time per trial (optional)
    sampler: {type: tpe, seed: 0}                 # tpe | random | nsga2
    pruner: {type: median, n_startup_trials: 4, n_warmup_steps: 2}   # median | percentile | successive_halving | hyperband | patient | none
    # patient: the wrapped pruner, only for trials whose best of the last patience + 1 reports is
    # below their earlier best − min_delta (≥ 0), e.g.
    #   {type: patient, patience: 2, wrapped: {type: median, n_startup_trials: 4}}
    overrides: ["--trainer.max_epochs", "20", "--trainer.check_val_every_n_epoch", "1"]
    space:
      model:                                      # Optuna parameter name
        type: categorical
        choices: [unet, dynunet, segresnet]
        targets: [model.init_args.model]          # LightningCLI keys set to the value
      lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, targets: [model.init_args.lr]}
      patch: {type: categorical, choices: ["[48, 48, 48]", "[64, 64, 64]"],
              targets: [data.init_args.patch_size]}

A parameter whose target is ``config`` chooses the base experiment YAML itself, so a sweep can
compare tasks set up by different files (e.g. early vs. late fusion, with their own
datamodules). Values are passed to LightningCLI as text, so a categorical choice may be any
YAML value written as a string (lists, dicts).

Objective metrics: any key of the trial's last validation (``val/dice``,
``val/balanced_accuracy`` …), or ``params_M``, ``latency_s``, ``train_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from cogimg.schema import parse_section

SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "percentile", "successive_halving", "hyperband", "patient", "none")
DIRECTIONS = ("maximize", "minimize")
RUN_METRICS = ("params_M", "latency_s", "train_s")


@dataclass(frozen=True)
class Param:
    """One searched parameter: its distribution and the config keys it sets."""

    name: str
    type: str
    targets: tuple[str, ...]
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def suggest(self, trial) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, checked sweep file (see module docstring)."""

    name: str
    config: str | None
    objectives: tuple[tuple[str, str], ...]
    space: tuple[Param, ...]
    n_trials: int = 20
    budget_s: float | None = None
    sampler: dict = field(default_factory=lambda: {"type": "tpe", "seed": 0})
    pruner: dict = field(default_factory=lambda: {"type": "median"})
    overrides: tuple[str, ...] = ()
    storage: str | None = None
    seed_everything: int = 0
    prune_metric: str | None = None
    path: str = ""

    @property
    def directions(self) -> list[str]:
        return [d for _, d in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


# ------------------------------------------------------------------ file schema (typed)
@dataclass
class ParamFile:
    """One entry of ``space:`` as written."""

    type: Literal["float", "int", "categorical"]
    targets: list[str] | str | None = None
    choices: list | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None


@dataclass
class ObjectiveFile:
    """One entry of ``objectives:``."""

    metric: str
    direction: Literal["maximize", "minimize"]


@dataclass
class SweepFile:
    """The top level of a sweep file as written (``space`` entries and objectives are checked
    by :class:`ParamFile` / :class:`ObjectiveFile`, each error naming its own key)."""

    space: dict[str, dict]
    name: str | None = None
    config: str | None = None
    objectives: list[dict] | None = None
    n_trials: int = 20
    budget_s: float | None = None
    sampler: dict | str = "tpe"
    pruner: dict | str = "median"
    overrides: list[str | int | float] = field(default_factory=list)
    storage: str | None = None
    seed_everything: int = 0
    prune_metric: str | None = None


def _fail(path, key: str, problem: str) -> None:
    raise ValueError(f"{path}: {key}: {problem}")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; any problem is one ``ValueError`` naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist")
    raw = parse_section(SweepFile, yaml.safe_load(path.read_text(encoding="utf-8")), path)
    if not raw.space:
        _fail(path, "space", "must map parameter names to distributions")
    params = tuple(_param(path, name, value) for name, value in raw.space.items())
    if raw.config is None and not any("config" in p.targets for p in params):
        _fail(path, "config", "needed unless a parameter targets `config`")
    objectives = raw.objectives or [{"metric": "val/dice", "direction": "maximize"}]
    parsed = tuple((o.metric, o.direction) for o in
                   (parse_section(ObjectiveFile, obj, path, f"objectives[{i}]") for i, obj in enumerate(objectives)))
    sampler = _typed(path, "sampler", raw.sampler, SAMPLERS)
    pruner = _typed(path, "pruner", raw.pruner, PRUNERS)
    if raw.n_trials < 1:
        _fail(path, "n_trials", f"must be a positive integer, got {raw.n_trials!r}")
    return SweepSpec(name=str(raw.name or path.stem), config=raw.config, objectives=parsed,
                     space=params, n_trials=raw.n_trials, budget_s=raw.budget_s, sampler=sampler,
                     pruner=pruner, overrides=tuple(str(o) for o in raw.overrides), storage=raw.storage,
                     seed_everything=raw.seed_everything, prune_metric=raw.prune_metric, path=str(path))


def _typed(path, key: str, value, allowed: tuple[str, ...]) -> dict:
    value = {"type": value} if isinstance(value, str) else value
    if not isinstance(value, dict) or value.get("type") not in allowed:
        _fail(path, key, f"type must be one of {list(allowed)}, got {value!r}")
    return dict(value)


def _param(path, name: str, value) -> Param:
    key = f"space.{name}"
    entry = parse_section(ParamFile, value, path, key)
    targets = [entry.targets] if isinstance(entry.targets, str) else list(entry.targets or [])
    if not targets:
        _fail(path, key, "targets: name the config key(s) it sets (e.g. model.init_args.lr) or `config`")
    if entry.type == "categorical":
        if not entry.choices:
            _fail(path, key, "categorical needs a non-empty list of choices")
        return Param(name, entry.type, tuple(targets), choices=tuple(entry.choices))
    low, high = entry.low, entry.high
    if low is None or high is None or low >= high:
        _fail(path, key, f"needs numbers low < high, got low={low!r}, high={high!r}")
    if entry.log and low <= 0:
        _fail(path, key, "log scale needs low > 0")
    return Param(name, entry.type, tuple(targets), low=low, high=high, log=entry.log, step=entry.step)


def resolve_config(spec: SweepSpec, config: str) -> Path:
    """A config path from the sweep: as given if it exists, else relative to the repository
    holding the sweep file (``sweeps/`` sits beside ``experiments/``)."""
    candidates = [Path(config), Path(spec.path).resolve().parent.parent / config]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{spec.path}: config {config!r} not found (looked at {[str(c) for c in candidates]})")
