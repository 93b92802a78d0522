"""Study runner ``leave_site_out``: one adaptation variant of the leave-site-out protocol
(:class:`cogimg.paradigms.adaptation.protocol.LeaveSiteOut`, what ``cogimg evaluate
--protocol leave-site-out`` runs) for every held-out site, each site an ordinary run directory.

An arm is one variant (``options.variant``: ``baseline`` or one of
:data:`~cogimg.paradigms.adaptation.protocol.VARIANTS`). For every site ``s`` of the
leave-site-out split (made once per study under ``--out/splits/`` with ``split_seed``, so every
arm and training seed holds out the same subjects): train on the other sites for the
experiment's ``trainer.max_epochs`` (``--seed_everything`` = the study seed; no model selection
on the held-out site) and score site ``s``'s subjects:

* ``baseline``: the plain model; its run directory also holds the **in-site** rows
  (``subjects_val.csv``: the held-out share ``val_fraction`` of the training sites' subjects);
* ``histstd``, ``dann``, ``dann_mt``, ``coral``, ``mmd``: a model retrained with that variant;
* ``adabn``, ``tent``: the baseline model adapted on site ``s``'s images without labels — the
  baseline arm's weights of the same seed and site when that arm finished
  (``options.baseline_arm``), else a baseline trained here.

Run directories: ``run_dir/<site>/`` (:func:`cogimg.tracking.run.write_run`: experiment
``held_out_<site>``, variant = the arm's name), holding ``subjects_test.csv`` (out-of-site,
the task's per-subject rows) and, for the baseline, ``subjects_val.csv`` and ``model.pt`` (the
weights of the test-time variants). Every row carries the subject's ``site``
(``participants.tsv``), so the in-site rows give each site's same-site score
(:mod:`cogimg.tracking.study_figures_sites`). All sites are written together at the end, so an
interrupted arm leaves no run directory the study would count as finished.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from cogimg.schema import parse_section
from cogimg.tracking.study_registry import StudyContext, arm_overrides, register_runner

TEST_TIME = ("adabn", "tent")
WEIGHTS = "model.pt"


@dataclasses.dataclass
class LeaveSiteOutOptions:
    """An arm's ``options:`` for ``runner: leave_site_out`` (module docstring)."""

    variant: str = "baseline"
    sites: list[str] | None = None  # held-out sites (default: every site)
    val_fraction: float = 0.3  # share of the training sites' subjects held out as in-site
    adaptation_weight: float = 0.1  # DANN / CORAL / MMD loss weight
    tent_steps: int = 3
    tent_lr: float = 1e-3
    split_seed: int = 0
    baseline_arm: str = "baseline"  # adabn / tent: whose weights they adapt


def read_options(arm: dict) -> LeaveSiteOutOptions:
    """The arm's options, checked; errors name the arm and the key."""
    from cogimg.paradigms.adaptation.protocol import VARIANTS

    where = f"arms ({arm['name']}).options"
    options = parse_section(LeaveSiteOutOptions, arm.get("options") or {},
                            arm.get("config") or "study", where)
    if options.variant not in ("baseline", *VARIANTS):
        raise ValueError(f"{where}.variant: {options.variant!r}; choose baseline or one of "
                         f"{list(VARIANTS)}")
    if not 0 < options.val_fraction < 1:
        raise ValueError(f"{where}.val_fraction: {options.val_fraction}; between 0 and 1")
    return options


def baseline_weights(context: StudyContext, options: LeaveSiteOutOptions, seed: int,
                     site: str) -> Path | None:
    """The finished baseline arm's weights for ``seed`` and held-out ``site``, if any."""
    path = context.out / "runs" / options.baseline_arm / f"seed{seed}" / site / WEIGHTS
    return path if path.is_file() and (path.parent / "manifest.json").is_file() else None


def run_site(protocol, site: str, options: LeaveSiteOutOptions, context: StudyContext,
             seed: int) -> tuple[object, dict[str, list[dict]], float]:
    """``(task, {stage: per-subject rows}, training s)`` of one held-out site."""
    import torch

    start = time.perf_counter()
    variant, weight = options.variant, options.adaptation_weight
    if variant in TEST_TIME:
        saved = baseline_weights(context, options, seed, site)
        if saved is not None:
            task, dm = protocol.exp.task_class(**protocol.exp.task_args), protocol._datamodule(site, "baseline")
            task.load_state_dict(torch.load(saved, weights_only=True))
        else:
            task, dm = protocol._train(site, "baseline", weight)
        protocol._evaluate(task, dm, "test")  # sets the held-out site's test data up
        train_s = time.perf_counter() - start
        protocol._test_time(task, dm, variant)
        return task, {"test": list(task.subject_rows["test"])}, train_s
    task, dm = protocol._train(site, variant, weight)
    train_s = time.perf_counter() - start
    rows = {}
    for stage in ("val", "test") if variant == "baseline" else ("test",):
        protocol._evaluate(task, dm, stage)
        rows[stage] = list(task.subject_rows[stage])
    return task, rows, train_s


@register_runner("leave_site_out")
def leave_site_out_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> Path:
    """One variant × seed over every held-out site (module docstring) into ``run_dir``."""
    import torch

    from cogimg.data.participants import read_participants
    from cogimg.paradigms.adaptation.protocol import LeaveSiteOut
    from cogimg.tasks.config import Experiment
    from cogimg.tracking.provenance import data_fingerprint, file_sha256, git_info
    from cogimg.tracking.run import write_run
    from cogimg.tracking.study_federated import subject_metric

    options = read_options(arm)
    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'leave_site_out' needs a config")
    code = git_info()
    exp = Experiment.from_yaml(arm["config"], arm_overrides(arm, seed, context))
    exp.seed = options.split_seed  # the split's seed; training is seeded by `seed`
    protocol = LeaveSiteOut(exp, context.out / "splits", val_fraction=options.val_fraction,
                            tent_steps=options.tent_steps, tent_lr=options.tent_lr,
                            train_seed=seed)
    split = protocol.split_path()
    sites = protocol.sites()
    if unknown := [s for s in options.sites or [] if s not in sites]:
        raise ValueError(f"arms ({arm['name']}).options.sites: {unknown} not in the cohort's "
                         f"sites {sites}")
    results = {}
    for site in options.sites or sites:
        results[site] = run_site(protocol, site, options, context, seed)
    site_of = read_participants(protocol.data_root / "participants.tsv")["site"].astype(str)
    staging = run_dir.with_name(f".{run_dir.name}.partial")
    if staging.exists():
        shutil.rmtree(staging)
    data = {"root": str(context.data), "sha256": data_fingerprint(context.data),
            "split_file": str(split), "split_sha256": file_sha256(split)}
    for site, (task, subjects, train_s) in results.items():
        folder = staging / site
        subjects = {stage: [{**r, "site": site_of.get(str(r["subject_id"]), "")} for r in rows]
                    for stage, rows in subjects.items()}
        metrics = {stage: subject_metric(task, rows, stage) for stage, rows in subjects.items()}
        write_run(folder, task, experiment=f"held_out_{site}", variant=arm["name"], seed=seed,
                  subjects=subjects, metrics=metrics, wall_s=round(train_s, 1), git=code, data=data,
                  leave_site_out={"held_out": site, **dataclasses.asdict(options)})
        if options.variant == "baseline":
            torch.save(task.state_dict(), folder / WEIGHTS)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    staging.rename(run_dir)
    return run_dir
