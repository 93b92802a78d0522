"""Study files (``studies/*.yaml``): typed sections, presets, one clear error per bad key.

A study file (see ``studies/README.md``) holds ``kind: study``, ``name``, ``question``, the
cohort (``cohort``: :func:`cogimg.data.synth.generate_cohort` arguments, or ``data``: an
existing BIDS root), ``seeds``, common ``overrides``, ``arms`` (each an experiment YAML run by
a named runner), ``comparisons`` (arm ``b`` − arm ``a`` on one metric of one stage),
``figures`` (study figure kinds) and presets (``tiny:``, ``full:``) that replace cohort,
seeds, common overrides and arm budgets.

:func:`load_study` returns the resolved study as a plain dict (what ``--out/study.yaml``
holds): config paths absolute, the preset applied, every arm's ``overrides`` final —
its own first, then the common ones (the study's or the preset's: sizes), so that sizes
set in common overrides win over an arm's and a preset can shrink every arm.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from cogimg.schema import parse_section

PRESETS = ("tiny", "full")


@dataclasses.dataclass
class ArmSpec:
    """One entry of ``arms:``."""

    name: str
    config: str | None = None  # an experiment YAML (relative to the repository root)
    overrides: list[str | int | float] = dataclasses.field(default_factory=list)
    budget_s: float | None = None
    runner: str = "fit"
    options: dict | None = None  # runner-specific settings (e.g. a leave-site-out's sites)


@dataclasses.dataclass
class ComparisonSpec:
    """One entry of ``comparisons:``; ``a``/``b`` an arm, or a list of arms (the best of them
    on ``metric``, pooled over seeds, in the metric's direction)."""

    a: str | list[str]
    b: str | list[str]
    metric: str
    stage: str = "val"
    name: str | None = None


@dataclasses.dataclass
class PresetSpec:
    """``tiny:`` / ``full:``: replaces cohort (or data), seeds, common overrides and budgets;
    ``arms`` (names) keeps only those arms, and the comparisons whose sides keep an arm."""

    cohort: dict | None = None
    data: str | None = None
    seeds: list[int] | None = None
    overrides: list[str | int | float] | None = None
    budget_s: float | None = None
    n_boot: int | None = None
    arms: list[str] | None = None


@dataclasses.dataclass
class StudyFile:
    """The top level of a study file (module docstring)."""

    name: str
    question: str
    arms: list[dict]
    kind: str = "study"
    cohort: dict | None = None
    data: str | None = None
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    overrides: list[str | int | float] = dataclasses.field(default_factory=list)
    comparisons: list[dict] = dataclasses.field(default_factory=list)
    figures: list[str] = dataclasses.field(default_factory=list)
    n_boot: int = 2000
    tiny: dict | None = None
    full: dict | None = None


def _repo_of(path: Path) -> Path:
    """The repository root a study file's relative config paths start from: the nearest
    parent holding ``experiments/``."""
    for parent in path.resolve().parents:
        if (parent / "experiments").is_dir():
            return parent
    return path.resolve().parent


def _arm_names(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def resolve_study(raw: dict, path: str | Path, preset: str | None = None) -> dict:
    """The resolved study (module docstring) of the mapping ``raw`` read from ``path``."""
    from cogimg.tracking.study_registry import FIGURES, RUNNERS, load_plugins

    load_plugins()
    path = Path(path)
    study = parse_section(StudyFile, raw, path)
    if study.kind != "study":
        raise ValueError(f"{path}: kind: {study.kind!r}, not 'study'")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"{path}: preset {preset!r}; choose one of {list(PRESETS)}")
    chosen = parse_section(PresetSpec, getattr(study, preset) or {}, path, preset) if preset else None
    if preset and getattr(study, preset) is None:
        raise ValueError(f"{path}: {preset}: no such preset in the file")
    cohort, data, seeds, common = study.cohort, study.data, study.seeds, study.overrides
    n_boot, budget = study.n_boot, None
    if chosen:
        if chosen.cohort is not None or chosen.data is not None:
            cohort, data = chosen.cohort, chosen.data
        seeds = chosen.seeds if chosen.seeds is not None else seeds
        common = chosen.overrides if chosen.overrides is not None else common
        n_boot = chosen.n_boot or n_boot
        budget = chosen.budget_s
    if (cohort is None) == (data is None):
        raise ValueError(f"{path}: cohort / data: give exactly one (generate_cohort arguments, "
                         "or an existing BIDS root)")
    if not seeds:
        raise ValueError(f"{path}: seeds: at least one seed")
    repo = _repo_of(path)
    arms, names = [], set()
    for i, entry in enumerate(study.arms):
        where = f"arms[{i}]" + (f" ({entry['name']})" if isinstance(entry, dict) and "name" in entry else "")
        arm = parse_section(ArmSpec, entry, path, where)
        if arm.name in names:
            raise ValueError(f"{path}: {where}.name: {arm.name!r} appears twice")
        names.add(arm.name)
        if arm.runner not in RUNNERS:
            raise ValueError(f"{path}: {where}.runner: {arm.runner!r}; registered: {sorted(RUNNERS)}")
        config = None
        if arm.config is not None:
            config = Path(arm.config) if Path(arm.config).is_file() else repo / arm.config
            if not config.is_file():
                raise FileNotFoundError(f"{path}: {where}.config: {arm.config!r} not found")
        arms.append({"name": arm.name, "config": str(config) if config else None,
                     "overrides": [*map(str, arm.overrides), *map(str, common)],
                     "budget_s": budget if preset else arm.budget_s, "runner": arm.runner,
                     "options": arm.options or {}})
    comparisons = []
    for i, entry in enumerate(study.comparisons):
        c = parse_section(ComparisonSpec, entry, path, f"comparisons[{i}]")
        for side in ("a", "b"):
            if unknown := [n for n in _arm_names(getattr(c, side)) if n not in names]:
                raise ValueError(f"{path}: comparisons[{i}].{side}: no arm named {unknown}; "
                                 f"arms: {sorted(names)}")
        comparisons.append(dataclasses.asdict(c))
    if chosen and chosen.arms is not None:
        arms, comparisons = _keep_arms(arms, comparisons, chosen.arms, f"{path}: {preset}.arms")
    if unknown := [f for f in study.figures if f not in FIGURES]:
        raise ValueError(f"{path}: figures: {unknown} unknown; registered: {sorted(FIGURES)}")
    return {"kind": "study", "name": study.name, "question": study.question, "preset": preset,
            "cohort": cohort, "data": str(data) if data else None, "seeds": list(seeds),
            "n_boot": n_boot, "arms": arms, "comparisons": comparisons,
            "figures": list(study.figures), "source": str(path)}


def _keep_arms(arms: list[dict], comparisons: list[dict], keep: list[str],
               where: str) -> tuple[list[dict], list[dict]]:
    """The arms named in ``keep`` and the comparisons left when every side keeps only those
    (a list side shrinks; a comparison with an empty side is dropped)."""
    if unknown := sorted(set(keep) - {a["name"] for a in arms}):
        raise ValueError(f"{where}: no arm named {unknown}; arms: {[a['name'] for a in arms]}")
    kept = []
    for c in comparisons:
        sides = {side: [n for n in _arm_names(c[side]) if n in keep] for side in ("a", "b")}
        if all(sides.values()):
            kept.append({**c, **{side: names if isinstance(c[side], list) else names[0]
                                 for side, names in sides.items()}})
    return [a for a in arms if a["name"] in keep], kept


def load_study(path: str | Path, preset: str | None = None) -> dict:
    """The study file ``path`` resolved with ``preset`` (``None``, ``tiny`` or ``full``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {path} does not exist")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return resolve_study(raw, path, preset)


def read_resolved(out: str | Path) -> dict | None:
    """The resolved study that ``cogimg study`` copied into ``out/study.yaml`` (``None``
    when there is none: a plain runs folder)."""
    path = Path(out) / "study.yaml"
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8"))
