"""The main job: ``cogimg benchmark experiments/quickstart.yaml --out runs/quickstart``.

Synthesise the cohort (once) → check it → fit every experiment of the benchmark file with
every seed under a wall-time budget (each fit a normal run directory) → ``leaderboard.md|csv|
tex|html``, ``figures/`` and ``report.html`` in ``--out``. Rerunning skips finished fits, so
an interrupted job continues. The benchmark file (see ``experiments/quickstart.yaml``) holds
``cohort`` (``generate_cohort`` arguments), ``seeds``, common ``overrides``, ``experiments``
(``config``, optional ``overrides`` of its own, e.g. ``--trainer.max_steps``, and an optional
``budget_s`` wall-time cap) and a ``full`` preset that replaces cohort, seeds and overrides
and drops the per-experiment overrides and caps, for a GPU.

Size training in steps or epochs, not seconds: a seeded run then gives the same numbers on
any machine; a ``budget_s`` cap that is hit makes the result depend on the machine's speed
(the run's ``result.json`` records its steps).

Layout of ``--out``: ``data/`` (BIDS cohort), ``cache/`` (preprocessed volumes, splits),
``runs/<experiment>/seed<k>/`` (``result.json`` + ``lightning_logs/version_0/`` run dir),
``study.yaml`` / ``study.json`` (the benchmark runs as a study without comparisons:
:mod:`cogimg.tracking.study`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from cogimg.schema import parse_section


@dataclasses.dataclass
class ExperimentEntry:
    """One entry of ``experiments:``."""

    config: str
    overrides: list[str | int | float] = dataclasses.field(default_factory=list)
    budget_s: float | None = None


@dataclasses.dataclass
class FullPreset:
    """``full:``: replaces cohort, seeds and overrides; drops per-experiment overrides/caps."""

    cohort: dict | None = None
    seeds: list[int] | None = None
    overrides: list[str | int | float] | None = None
    budget_s: float | None = None


@dataclasses.dataclass
class BenchmarkFile:
    """The top level of a benchmark file (module docstring)."""

    experiments: list[dict]
    kind: str | None = None  # "benchmark": what ``cogimg fit --config`` routes to this job
    cohort: dict | None = None
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    overrides: list[str | int | float] = dataclasses.field(default_factory=list)
    full: dict | None = None


DEFAULT_FILE = "experiments/quickstart.yaml"


def default_benchmark_file() -> Path:
    """``experiments/quickstart.yaml`` of the working directory, else of the source checkout."""
    for path in (Path(DEFAULT_FILE), Path(__file__).resolve().parents[2] / DEFAULT_FILE):
        if path.is_file():
            return path
    raise FileNotFoundError(f"no {DEFAULT_FILE} in the working directory or the cogimg checkout")


def load_benchmark(path: str | Path, full: bool = False) -> dict:
    """The benchmark file with the ``full`` preset applied when asked; one clear error per
    bad key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    raw = parse_section(BenchmarkFile, yaml.safe_load(path.read_text(encoding="utf-8")) or {}, path)
    if raw.kind not in (None, "benchmark"):
        raise ValueError(f"{path}: kind: {raw.kind!r}, not 'benchmark'")
    if not raw.experiments:
        raise ValueError(f"{path}: experiments: a list of {{config: FILE, overrides: [...], "
                         "budget_s: SECONDS}}")
    repo = path.resolve().parent.parent
    experiments = []
    for i, entry in enumerate(raw.experiments):
        where = f"experiment {entry['config']!r}" if isinstance(entry, dict) and "config" in entry \
            else f"experiments[{i}]"
        e = dataclasses.asdict(parse_section(ExperimentEntry, entry, path, where))
        config = Path(e["config"]) if Path(e["config"]).is_file() else repo / e["config"]
        if not config.is_file():
            raise FileNotFoundError(f"{path}: experiment config {e['config']!r} not found")
        experiments.append({**e, "config": str(config)})
    spec = {"cohort": raw.cohort, "seeds": raw.seeds, "overrides": raw.overrides,
            "experiments": experiments, "full": raw.full}
    preset = parse_section(FullPreset, raw.full or {}, path, "full")
    if full:
        spec["cohort"] = preset.cohort if preset.cohort is not None else spec["cohort"]
        spec["seeds"] = preset.seeds if preset.seeds is not None else spec["seeds"]
        spec["overrides"] = preset.overrides if preset.overrides is not None else spec["overrides"]
        for e in experiments:
            e["overrides"], e["budget_s"] = [], preset.budget_s
    return spec


def benchmark_study(spec: dict, path: str | Path, full: bool = False) -> dict:
    """A loaded benchmark file as a resolved study (:mod:`cogimg.tracking.study_spec`): each
    experiment an arm named after its config file, fitted with the common overrides first and
    its own after them; no comparisons."""
    arms = [{"name": Path(e["config"]).stem, "config": e["config"], "runner": "fit", "options": {},
             "overrides": [*map(str, spec["overrides"]), *map(str, e.get("overrides", []))],
             "budget_s": e.get("budget_s")} for e in spec["experiments"]]
    return {"kind": "study", "name": Path(path).stem, "question": f"benchmark {Path(path).name}",
            "preset": "full" if full else None, "cohort": spec["cohort"], "data": None,
            "seeds": list(spec["seeds"]), "n_boot": 1000, "arms": arms, "comparisons": [],
            "figures": [], "source": str(path)}


def run_benchmark(path: str | Path, out: str | Path, full: bool = False, workers: int = 2) -> Path:
    """Run the main job (module docstring) through the study runner
    (:func:`cogimg.tracking.study.run_study`); returns the report path."""
    from cogimg.tracking.study import run_study

    study = benchmark_study(load_benchmark(path, full=full), path, full=full)
    outputs = run_study(path, out, workers=workers, study=study)
    print(f"wrote {Path(out) / 'leaderboard.md'}, {len(outputs['figures'])} figures in "
          f"{Path(out) / 'figures'} and {outputs['report']}")
    return outputs["report"]
