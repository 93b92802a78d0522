"""Studies as configs: ``cogimg study studies/fusion_gain.yaml --out runs/studies/fusion_gain``.

A study (file format: :mod:`cogimg.tracking.study_spec`, ``studies/README.md``) compares
*arms* — experiment YAMLs run by a named runner — over seeds on one cohort. The job:
synthesise the cohort once (or use ``data:``) → run every arm × seed into an ordinary run
directory ``--out/runs/<arm>/seed<k>/`` (manifest, per-subject rows, curves; an arm × seed
whose run directory finished is not run again, so an interrupted study resumes) → the same
outputs ``cogimg leaderboard|figures|report --out`` make from those directories alone
(:func:`finish_study`): leaderboard, standard figures, the study's comparison table
(:mod:`cogimg.tracking.study_stats`) and its declared figures, ``report.html``.

``--out/study.yaml`` is the resolved study (preset applied); ``study.json`` the wall time per
arm, the commit and the preset.

Two registries make the job extensible without touching it:

* :data:`RUNNERS` — ``{name: runner(arm, seed, run_dir, context)}``: runs one arm × seed into
  ``run_dir`` (a run directory, or a folder holding one). ``fit`` (the default) fits the
  arm's experiment YAML (:func:`cogimg.tracking.experiment.run_experiment`). Register more
  with :func:`register_runner`.
* :data:`FIGURES` — ``{name: figure(out, study, figures_dir) -> list[png paths]}``: a figure
  kind a study can list under ``figures:``; :func:`register_figure` adds one
  (:mod:`cogimg.tracking.study_figures` holds the built-in ones).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from cogimg.io import atomic_write_text

Runner = Callable[[dict, int, Path, "StudyContext"], object]
Figure = Callable[[Path, dict, Path], list]
RUNNERS: dict[str, Runner] = {}
FIGURES: dict[str, Figure] = {}
#: runners that read their arm's own data section, not the study's BIDS root: a study whose
#: arms all use one may name a non-BIDS ``data:`` folder (e.g. the SOOP masks)
OWN_DATA: set[str] = set()


def register_runner(name: str, own_data: bool = False) -> Callable[[Runner], Runner]:
    """Decorator: ``@register_runner("federated")`` makes ``runner: federated`` valid in arms
    (``own_data``: see :data:`OWN_DATA`)."""
    def add(fn: Runner) -> Runner:
        RUNNERS[name] = fn
        if own_data:
            OWN_DATA.add(name)
        return fn
    return add


def register_figure(name: str) -> Callable[[Figure], Figure]:
    """Decorator: ``@register_figure("froc")`` makes ``froc`` valid under ``figures:``."""
    def add(fn: Figure) -> Figure:
        FIGURES[name] = fn
        return fn
    return add


def write_figure_table(figures_dir: str | Path, name: str, table, markdown: str) -> Path:
    """Write a study figure's numbers beside its picture: ``<name>.csv`` (``table``, a
    DataFrame) and ``<name>.md`` (``markdown``) in ``figures_dir`` (made if missing), atomically;
    returns ``figures_dir`` as a Path."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(figures_dir / f"{name}.csv", table.to_csv(index=False))
    atomic_write_text(figures_dir / f"{name}.md", markdown)
    return figures_dir


@dataclasses.dataclass
class StudyContext:
    """What every runner gets besides its arm and seed.

    ``data``: the BIDS root; ``cache``: the shared preprocessing cache folder; ``stages``: the
    stages the study's comparisons score (``val``, ``test``: a runner writes
    ``subjects_<stage>.csv`` for each); ``trainer_overrides``: accelerator / devices /
    precision from the command line (LightningCLI arguments, applied last); ``out``: the
    study's output folder."""

    data: Path
    cache: Path
    stages: tuple[str, ...]
    trainer_overrides: list[str]
    out: Path


def arm_overrides(arm: dict, seed: int, context: StudyContext) -> list[str]:
    """LightningCLI arguments of one arm × seed: data root and cache, ``--seed_everything``,
    the arm's resolved overrides (``{seed}`` replaced by the seed), then the command line's."""
    return ["--data.init_args.data_root", str(context.data),
            "--data.init_args.cache_dir", str(context.cache), "--seed_everything", str(seed),
            *(str(o).replace("{seed}", str(seed)) for o in arm["overrides"]),
            *context.trainer_overrides]


@register_runner("fit")
def fit_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext):
    """Fit the arm's experiment YAML (a run directory under ``run_dir/lightning_logs/``);
    scored on the test subjects too when a comparison asks for ``test``."""
    from cogimg.tracking.experiment import run_experiment

    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'fit' needs a config (an experiment YAML)")
    return run_experiment(arm["config"], run_dir, name=arm["name"], budget_s=arm.get("budget_s"),
                          overrides=arm_overrides(arm, seed, context), test="test" in context.stages)


def finished(run_dir: Path, stages: tuple[str, ...]) -> bool:
    """Whether ``run_dir`` holds a finished run directory with per-subject rows of every stage."""
    from cogimg.tracking.leaderboard import find_runs

    return run_dir.is_dir() and all(find_runs(run_dir, stage=s)[0] for s in stages)


def study_stages(study: dict) -> tuple[str, ...]:
    """The stages the comparisons score (``("val",)`` without comparisons)."""
    return tuple(sorted({c["stage"] for c in study.get("comparisons", [])} or {"val"}))


def trainer_arguments(accelerator: str | None = None, devices: str | None = None,
                      precision: str | None = None) -> list[str]:
    """LightningCLI arguments for the options given on the command line."""
    args = []
    for key, value in (("accelerator", accelerator), ("devices", devices), ("precision", precision)):
        if value is not None:
            args += [f"--trainer.{key}", str(value)]
    return args


def prepare_data(study: dict, out: Path, workers: int = 2, command: str = "cogimg study") -> Path:
    """The study's BIDS root: ``data:``, or the ``cohort`` synthesised once into ``out/data``."""
    from cogimg.data.bids import load_dataset
    from cogimg.data.synth import generate_cohort

    if study.get("data"):
        data = Path(study["data"])
    else:
        data = out / "data"
        if not (data / "participants.tsv").is_file():
            cohort = dict(study["cohort"])
            print(f"synthesising {cohort.get('subjects')} subjects → {data}", flush=True)
            generate_cohort(data, cohort.pop("subjects"), cohort.pop("seed", 0), workers=workers,
                            command=command, progress=False, **cohort)
    if study.get("cohort") or not all(a["runner"] in OWN_DATA for a in study["arms"]):
        load_dataset(data)  # strict: any problem stops the study with the full list
    return data


def run_arms(study: dict, out: Path, data: Path, trainer_overrides: list[str] = ()) -> dict:
    """Run every arm × seed not finished yet; returns ``{arm: seconds spent now}``."""
    context = StudyContext(data=data, cache=out / "cache", stages=study_stages(study),
                           trainer_overrides=list(trainer_overrides), out=out)
    wall: dict[str, float] = {}
    for arm in study["arms"]:
        wall.setdefault(arm["name"], 0.0)
        for seed in study["seeds"]:
            run_dir = out / "runs" / arm["name"] / f"seed{seed}"
            if finished(run_dir, context.stages):
                print(f"  {arm['name']} seed {seed}: finished earlier", flush=True)
                continue
            if run_dir.exists():
                shutil.rmtree(run_dir)  # an interrupted run starts afresh
            start = time.perf_counter()
            RUNNERS[arm["runner"]](arm, seed, run_dir, context)
            seconds = time.perf_counter() - start
            wall[arm["name"]] += seconds
            print(f"  {arm['name']} seed {seed}: {seconds:.0f} s", flush=True)
    return wall


def finish_study(out: str | Path, title: str | None = None, stage: str = "val") -> dict:
    """Leaderboard, figures, comparison table, study figures and report of ``out`` — what
    ``cogimg leaderboard``, ``figures`` and ``report`` make of it; returns their paths."""
    from cogimg.tracking.figure_set import make_figures
    from cogimg.tracking.leaderboard import find_runs, leaderboard
    from cogimg.tracking.report import write_report
    from cogimg.tracking.study_spec import read_resolved
    from cogimg.tracking.study_stats import write_study_tables
    from cogimg.tracking.tables import to_markdown, write_leaderboard

    out = Path(out)
    n_boot = int((read_resolved(out) or {}).get("n_boot") or 1000)  # leaderboard CIs too
    runs, _ = find_runs(out / "runs" if (out / "runs").is_dir() else out, stage=stage)
    table = leaderboard(runs, n_boot=n_boot)
    written = write_leaderboard(table, out, stage=stage)
    print(to_markdown(table, stage))
    comparisons, paths = write_study_tables(out, out)
    figures, skipped = make_figures(out, out / "figures", stage=stage, n_boot=min(n_boot, 500))
    for reason in skipped:
        print(f"  figure skipped: {reason}")
    report = write_report(out, out / "report.html", figures_dir=out / "figures", stage=stage,
                          title=title or f"cogimg study: {out.name}", n_boot=n_boot)
    return {**written, **paths, "comparisons": comparisons, "figures": figures, "report": report}


def run_study(path: str | Path, out: str | Path, preset: str | None = None,
              seeds: list[int] | None = None, accelerator: str | None = None,
              devices: str | None = None, precision: str | None = None, workers: int = 2,
              study: dict | None = None) -> dict:
    """Run the study file ``path`` into ``out`` (module docstring); returns
    :func:`finish_study`'s paths plus ``comparisons`` (the table). ``study``: an already
    resolved study (``cogimg benchmark`` passes its own)."""
    from cogimg.tracking.provenance import git_info
    from cogimg.tracking.study_spec import load_study, read_resolved
    from cogimg.tracking.study_stats import comparisons_markdown

    out = Path(out)
    study = dict(study) if study is not None else load_study(path, preset)
    if seeds:
        study["seeds"] = list(seeds)
    start = time.perf_counter()
    earlier = read_resolved(out)
    for key in ("preset", "cohort", "data"):
        if earlier is not None and earlier.get(key) != study.get(key):
            raise FileExistsError(f"{out / 'study.yaml'}: {key} was {earlier.get(key)!r}, now "
                                  f"{study.get(key)!r}: its runs would mix; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.yaml", yaml.safe_dump(study, sort_keys=False, allow_unicode=True))
    data = prepare_data(study, out, workers=workers)
    print(f"{study['name']}: {len(study['arms'])} arms × seeds {study['seeds']}", flush=True)
    wall = run_arms(study, out, data, trainer_arguments(accelerator, devices, precision))
    outputs = finish_study(out, title=f"cogimg study: {study['name']}")
    if outputs.get("comparisons") is not None:
        print(comparisons_markdown(outputs["comparisons"]))
    atomic_write_text(out / "study.json", json.dumps(
        {"study": str(path), "name": study["name"], "preset": study.get("preset"),
         "seeds": study["seeds"], "wall_s": round(time.perf_counter() - start, 1),
         "wall_s_per_arm": {k: round(v, 1) for k, v in wall.items()},
         "commit": (git_info() or {}).get("commit"),
         "trainer_overrides": trainer_arguments(accelerator, devices, precision)}, indent=2) + "\n")
    return outputs


#: modules that register runners and figure kinds (imported at the end: each imports this one)
PLUGINS = (
    "cogimg.tracking.connectome_baseline",   # runner connectome_baseline
    "cogimg.tracking.study_active_learning",  # runner active_learning
    "cogimg.tracking.study_figures_active",  # figure active_learning
    "cogimg.tracking.study_detection",       # runner seg_detect
    "cogimg.tracking.study_explain",         # runner explain
    "cogimg.tracking.study_federated",       # runner federated
    "cogimg.tracking.study_figures",         # figures paired_differences, froc, dice_vs_time, …
    "cogimg.tracking.study_figures_lowlabel",  # figure recovery_share
    "cogimg.tracking.study_figures_sites",   # figure site_recovery
    "cogimg.tracking.study_leave_site_out",  # runner leave_site_out
    "cogimg.tracking.study_outcome",         # runner outcome
    "cogimg.tracking.study_real_cases",      # runner real_cases
    "cogimg.tracking.study_sweep",           # runner sweep, figure pruning
)
for _plugin in PLUGINS:
    importlib.import_module(_plugin)
