"""The study registries: runners (how an arm × seed is run) and figure kinds (what a study
can list under ``figures:``), what each runner gets (:class:`StudyContext`), and the helpers
runners and figures share. Plugin modules register into them (:data:`PLUGINS`); the study job
(:mod:`cogimg.tracking.study`), its file checks (:mod:`cogimg.tracking.study_spec`) and its
figures read them after :func:`load_plugins`.

* :data:`RUNNERS` — ``{name: runner(arm, seed, run_dir, context)}``: runs one arm × seed into
  ``run_dir`` (a run directory, or a folder holding one). ``fit`` (the default) fits the arm's
  experiment YAML (:func:`cogimg.tracking.experiment.run_experiment`).
* :data:`FIGURES` — ``{name: figure(out, study, figures_dir) -> list[png paths]}``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path

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


#: modules that register runners and figure kinds (each imports this one): :func:`load_plugins`
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


def load_plugins() -> None:
    """Import every :data:`PLUGINS` module once, so that their runners and figure kinds are in
    :data:`RUNNERS` and :data:`FIGURES` (called before either is read)."""
    for plugin in PLUGINS:
        importlib.import_module(plugin)
