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
              targets: [model.init_args.patch_size, data.init_args.patch_size]}

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
from typing import Any

import yaml

TOP_KEYS = {"name", "config", "objectives", "n_trials", "budget_s", "sampler", "pruner", "overrides",
            "space", "storage", "seed_everything", "prune_metric"}
PARAM_KEYS = {"type", "choices", "low", "high", "log", "step", "targets"}
PARAM_TYPES = ("float", "int", "categorical")
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


def _fail(path, key: str, problem: str) -> None:
    raise ValueError(f"{path}: {key}: {problem}")


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file; any problem is one ``ValueError`` naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        _fail(path, "(top level)", "must be a mapping")
    unknown = set(raw) - TOP_KEYS
    if unknown:
        _fail(path, ", ".join(sorted(unknown)), f"unknown key(s); allowed: {sorted(TOP_KEYS)}")
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        _fail(path, "space", "must map parameter names to distributions")
    params = tuple(_param(path, name, value) for name, value in space.items())
    config = raw.get("config")
    if config is None and not any("config" in p.targets for p in params):
        _fail(path, "config", "needed unless a parameter targets `config`")
    objectives = raw.get("objectives") or [{"metric": "val/dice", "direction": "maximize"}]
    parsed = []
    for i, obj in enumerate(objectives):
        if not isinstance(obj, dict) or set(obj) != {"metric", "direction"} or obj["direction"] not in DIRECTIONS:
            _fail(path, f"objectives[{i}]", f"must be {{metric: NAME, direction: {'|'.join(DIRECTIONS)}}}")
        parsed.append((str(obj["metric"]), obj["direction"]))
    sampler = _typed(path, "sampler", raw.get("sampler", {"type": "tpe"}), SAMPLERS)
    pruner = _typed(path, "pruner", raw.get("pruner", {"type": "median"}), PRUNERS)
    n_trials = raw.get("n_trials", 20)
    if not isinstance(n_trials, int) or n_trials < 1:
        _fail(path, "n_trials", f"must be a positive integer, got {n_trials!r}")
    overrides = raw.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, (str, int, float)) for o in overrides):
        _fail(path, "overrides", "must be a list of LightningCLI arguments")
    return SweepSpec(name=str(raw.get("name", path.stem)), config=config, objectives=tuple(parsed),
                     space=params, n_trials=n_trials, budget_s=raw.get("budget_s"), sampler=sampler,
                     pruner=pruner, overrides=tuple(str(o) for o in overrides), storage=raw.get("storage"),
                     seed_everything=int(raw.get("seed_everything", 0)),
                     prune_metric=raw.get("prune_metric"), path=str(path))


def _typed(path, key: str, value, allowed: tuple[str, ...]) -> dict:
    value = {"type": value} if isinstance(value, str) else value
    if not isinstance(value, dict) or value.get("type") not in allowed:
        _fail(path, key, f"type must be one of {list(allowed)}, got {value!r}")
    return dict(value)


def _param(path, name: str, value) -> Param:
    key = f"space.{name}"
    if not isinstance(value, dict):
        _fail(path, key, "must be a mapping with type, targets and choices or low/high")
    unknown = set(value) - PARAM_KEYS
    if unknown:
        _fail(path, key, f"unknown field(s) {sorted(unknown)}; allowed: {sorted(PARAM_KEYS)}")
    kind = value.get("type")
    if kind not in PARAM_TYPES:
        _fail(path, key, f"type must be one of {list(PARAM_TYPES)}, got {kind!r}")
    targets = value.get("targets") or []
    if isinstance(targets, str):
        targets = [targets]
    if not targets:
        _fail(path, key, "targets: name the config key(s) it sets (e.g. model.init_args.lr) or `config`")
    if kind == "categorical":
        choices = value.get("choices")
        if not isinstance(choices, list) or not choices:
            _fail(path, key, "categorical needs a non-empty list of choices")
        return Param(name, kind, tuple(targets), choices=tuple(choices))
    low, high = value.get("low"), value.get("high")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or low >= high:
        _fail(path, key, f"needs numbers low < high, got low={low!r}, high={high!r}")
    if value.get("log") and low <= 0:
        _fail(path, key, "log scale needs low > 0")
    return Param(name, kind, tuple(targets), low=low, high=high, log=bool(value.get("log", False)),
                 step=value.get("step"))


def resolve_config(spec: SweepSpec, config: str) -> Path:
    """A config path from the sweep: as given if it exists, else relative to the repository
    holding the sweep file (``sweeps/`` sits beside ``experiments/``)."""
    candidates = [Path(config), Path(spec.path).resolve().parent.parent / config]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{spec.path}: config {config!r} not found (looked at {[str(c) for c in candidates]})")
