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
``runs/<experiment>/seed<k>/`` (``result.json`` + ``lightning_logs/version_0/`` run dir).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import yaml

from cogimg.io import atomic_write_text
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


def run_benchmark(path: str | Path, out: str | Path, full: bool = False, workers: int = 2) -> Path:
    """Run the main job (module docstring); returns the report path."""
    from tqdm.auto import tqdm

    from cogimg.data.bids import load_dataset
    from cogimg.data.synth import generate_cohort
    from cogimg.tracking.experiment import run_experiment
    from cogimg.tracking.figure_set import make_figures
    from cogimg.tracking.leaderboard import find_runs, leaderboard
    from cogimg.tracking.report import write_report
    from cogimg.tracking.tables import to_markdown, write_leaderboard

    spec = load_benchmark(path, full=full)
    out = Path(out)
    data, cache = out / "data", out / "cache"
    start = time.perf_counter()
    cohort = dict(spec["cohort"])
    if not (data / "participants.tsv").is_file():
        print(f"[1/4] synthesising {cohort.get('subjects')} subjects → {data}", flush=True)
        generate_cohort(data, cohort.pop("subjects"), cohort.pop("seed", 0), workers=workers,
                        command="cogimg benchmark", **cohort)
    dataset = load_dataset(data)  # strict: any problem stops the job with the full list
    counts = dataset.participants["diagnosis"].value_counts().to_dict()
    print(f"[2/4] cohort checked: {len(dataset.subjects)} subjects {counts}, 0 errors "
          f"({time.perf_counter() - start:.0f} s)", flush=True)

    jobs = [(e, seed) for e in spec["experiments"] for seed in spec["seeds"]]
    bar = tqdm(jobs, desc="[3/4] training", unit="run")
    for experiment, seed in bar:
        name = Path(experiment["config"]).stem
        run_dir = out / "runs" / name / f"seed{seed}"
        bar.set_postfix_str(f"{name} seed {seed}")
        if (run_dir / "result.json").is_file():
            continue  # finished earlier: the job resumes where it stopped
        result = run_experiment(
            experiment["config"], run_dir, name=name, budget_s=experiment.get("budget_s"),
            overrides=["--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(cache),
                       "--seed_everything", str(seed), *map(str, spec["overrides"]),
                       *map(str, experiment.get("overrides", []))])
        primary = next((f"{k}={v:.3f}" for k, v in result.metrics.items()
                        if k in ("val/dice", "val/balanced_accuracy")), "")
        bar.write(f"      {name} seed {seed}: {primary} after {result.steps} steps, {result.train_s:.0f} s")

    print("[4/4] leaderboard, figures, report", flush=True)
    runs, skipped = find_runs(out / "runs")
    for folder, reason in skipped:
        print(f"      left out {folder}: {reason}")
    table = leaderboard(runs)
    write_leaderboard(table, out)
    written, fig_skipped = make_figures(out / "runs", out / "figures")
    for reason in fig_skipped:
        print(f"      figure skipped: {reason}")
    report = write_report(out / "runs", out / "report.html", figures_dir=out / "figures",
                          title=f"cogimg benchmark: {Path(path).name}")
    total = time.perf_counter() - start
    atomic_write_text(out / "benchmark.json", json.dumps(
        {"benchmark": str(path), "full": full, "wall_s": round(total, 1), "runs": len(runs),
         "cohort": {"subjects": len(dataset.subjects), "diagnoses": counts}}, indent=2) + "\n")
    print(to_markdown(table))
    print(f"wrote {out / 'leaderboard.md'}, {len(written)} figures in {out / 'figures'} and {report} "
          f"in {total / 60:.1f} min")
    return report
