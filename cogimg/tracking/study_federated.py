"""Study runner ``federated``: centralised, local-only and federated (Flower) training of one
experiment across the sites of a cohort, each arm × seed an ordinary run directory.

Protocol (``studies/federated.yaml``): every site is split on its own participants (the
preset's diagnoses, stratified by diagnosis for classification: the datamodule's
``test_fraction`` as test, then fold 0 of its ``n_folds`` as train/val;
:func:`cogimg.paradigms.federated.splits.site_splits` with the arm's ``split_seed``, the same
for every arm and training seed). An arm trains for the
experiment's ``trainer.max_epochs`` epochs over its data (a preset sets it in the common
overrides):

* ``mode: centralised`` — one model on the union of the sites' training subjects;
* ``mode: local`` with ``site`` — one model on that site's training subjects only;
* ``mode: federated`` with ``strategy`` (``fedavg``, ``fedprox``, ``fedbn``, ``silobn``) —
  ``max_epochs / local_epochs`` rounds through Flower's simulation engine
  (:func:`cogimg.paradigms.federated.app.simulate`); each site is scored by the model its
  client evaluated last (the final global weights; FedBN/SiloBN with the site's own
  batch-norm entries).

Every arm is scored on the same subjects: the union of the sites' ``val`` and ``test`` sets, each site's subjects by the model for that site. The run directory
(:func:`cogimg.tracking.run.write_run`) holds the task's per-subject rows with their ``site``
(``subjects_<stage>.csv``), the split files under ``splits/`` (hashed in the manifest), the
training wall time and peak memory, and, for federated arms, the per-round validation curve
(``metrics.csv``: the example-weighted mean over sites) and Flower's server history and
client models under ``flower/``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from cogimg.schema import parse_section
from cogimg.tracking.study_registry import StudyContext, arm_overrides, register_runner

MODES = ("centralised", "local", "federated")
STRATEGIES = ("fedavg", "fedprox", "fedbn", "silobn")


@dataclasses.dataclass
class FederatedOptions:
    """An arm's ``options:`` for ``runner: federated`` (module docstring)."""

    mode: str
    site: str | None = None  # local: the site it trains on
    strategy: str | None = None  # federated: fedavg | fedprox | fedbn | silobn
    local_epochs: int = 1  # federated: epochs per round
    proximal_mu: float = 0.01  # fedprox: proximal strength
    split_seed: int = 0  # the per-site splits' seed (fixed across training seeds)


def read_options(arm: dict) -> FederatedOptions:
    """The arm's options, checked; errors name the arm and the key."""
    where = f"arms ({arm['name']}).options"
    options = parse_section(FederatedOptions, arm.get("options") or {}, arm.get("config") or "study",
                            where)
    if options.mode not in MODES:
        raise ValueError(f"{where}.mode: {options.mode!r}; choose one of {list(MODES)}")
    if options.mode == "local" and not options.site:
        raise ValueError(f"{where}.site: a local arm names the site it trains on")
    if options.mode == "federated" and options.strategy not in STRATEGIES:
        raise ValueError(f"{where}.strategy: {options.strategy!r}; choose one of {list(STRATEGIES)}")
    if options.local_epochs < 1:
        raise ValueError(f"{where}.local_epochs: {options.local_epochs}; at least 1")
    return options


def write_site_splits(data: Path, data_args: dict, split_seed: int, folder: Path) -> dict[str, Path]:
    """One split file per site plus ``pooled`` (their union) under ``folder``: ``{name: path}``;
    the datamodule's ``preset`` (diagnoses kept), ``test_fraction`` and ``n_folds``."""
    from cogimg.data.splits import save_split
    from cogimg.diseases import get_preset
    from cogimg.paradigms.federated.splits import pooled_split, site_splits

    spec = get_preset(data_args["preset"])
    splits = site_splits(data / "participants.tsv", diagnoses=spec.diagnoses,
                         stratify="diagnosis" if spec.task == "classification" else None,
                         test_fraction=data_args["test_fraction"], n_folds=data_args["n_folds"],
                         seed=split_seed)
    paths = {}
    for name, split in {**splits, "pooled": pooled_split(splits)}.items():
        paths[name] = folder / f"split_{name}.json"
        save_split(split, paths[name], overwrite=True)
    return paths


def _trainer(exp, **kwargs):
    import lightning as L

    args = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
            "enable_progress_bar": False, "enable_model_summary": False,
            "num_sanity_val_steps": 0, **exp.trainer_args, **kwargs}
    return L.Trainer(**args)


def _uses_gpu(trainer_args: dict) -> bool:
    import torch

    accelerator = str(trainer_args.get("accelerator", "cpu"))
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def _class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def train_arm(exp, options: FederatedOptions, paths: dict[str, Path], seed: int, epochs: int,
              folder: Path) -> tuple[dict, list[dict] | None]:
    """``({site: trained task}, learning curve or None)`` of one arm (module docstring)."""
    import lightning as L
    import torch

    sites = sorted(k for k in paths if k != "pooled")
    if options.mode != "federated":
        split = "pooled" if options.mode == "centralised" else options.site
        if split not in paths:
            raise ValueError(f"local site {options.site!r} is not in the cohort's sites {sites}")
        L.seed_everything(seed, verbose=False)
        model = exp.task_class(**exp.task_args)
        datamodule = exp.data_class(**{**exp.data_args, "split_file": str(paths[split])})
        _trainer(exp, max_epochs=epochs, limit_val_batches=0).fit(model, datamodule=datamodule)
        return dict.fromkeys(sites, model), None

    from cogimg.paradigms.federated.app import simulate

    if epochs % options.local_epochs:
        raise ValueError(f"trainer.max_epochs {epochs} is not a multiple of local_epochs "
                         f"{options.local_epochs} (rounds = max_epochs / local_epochs)")
    client_trainer = {k: v for k, v in exp.trainer_args.items() if k not in ("max_epochs", "max_steps")}
    spec = {"task": {"class_path": _class_path(exp.task_class), "init_args": exp.task_args},
            "data": {"class_path": _class_path(exp.data_class), "init_args": exp.data_args},
            "sites": {s: {"split_file": str(paths[s])} for s in sites},
            "strategy": options.strategy, "proximal_mu": options.proximal_mu,
            "rounds": epochs // options.local_epochs, "local_epochs": options.local_epochs,
            "seed": seed, "trainer": client_trainer, "out_dir": str(folder / "server"),
            "model_dir": str(folder / "clients")}
    strategy = simulate(spec, num_gpus=1.0 if _uses_gpu(exp.trainer_args) else 0.0)
    log = [{"epoch": h["round"] - 1, "train/loss": h["train"].get("train_loss", float("nan")),
            **{f"val/{k}": v for k, v in h["val"].items() if isinstance(v, (int, float))}}
           for h in strategy.history]
    models = {}
    for site in sites:
        models[site] = exp.task_class(**exp.task_args)
        models[site].load_state_dict(torch.load(folder / "clients" / f"{site}.pt", weights_only=True))
    return models, log


def score_sites(exp, models: dict, paths: dict[str, Path], stages: tuple[str, ...]) -> dict[str, list]:
    """``{stage: rows}``: each site's ``stage`` subjects scored by ``models[site]`` (the task's
    per-subject rows plus ``site``)."""
    rows: dict[str, list] = {stage: [] for stage in stages}
    for site, model in models.items():
        datamodule = exp.data_class(**{**exp.data_args, "split_file": str(paths[site])})
        for stage in stages:
            trainer = _trainer(exp)
            (trainer.validate if stage == "val" else trainer.test)(model, datamodule=datamodule,
                                                                   verbose=False)
            rows[stage] += [{**r, "site": site} for r in model.subject_rows[stage]]
    return rows


def subject_metric(task, rows: list[dict], stage: str) -> dict[str, float]:
    """``{"<stage>/<primary metric>": value}`` of per-subject ``rows`` (the leaderboard's
    scorer of the task's kind: what ``metrics.json`` records)."""
    import numpy as np
    import pandas as pd

    from cogimg.tracking.leaderboard import KINDS
    from cogimg.tracking.run import describe_task

    described = describe_task(task)
    table = pd.DataFrame(rows)
    scorer = KINDS[described["kind"]].scorer(table, np.array(sorted(table["subject_id"].unique())))
    metric = described["primary_metric"]
    return {f"{stage}/{metric}": float(scorer.score(metric))}


@register_runner("federated")
def federated_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> Path:
    """Train and score one arm × seed (module docstring) into the run directory ``run_dir``."""
    from cogimg.tasks.config import Experiment
    from cogimg.tracking.provenance import PeakMemory, data_fingerprint, file_sha256, git_info
    from cogimg.tracking.run import write_run

    options = read_options(arm)
    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'federated' needs a config (an experiment YAML)")
    code = git_info()
    exp = Experiment.from_yaml(arm["config"], arm_overrides(arm, seed, context))
    epochs = exp.trainer_args.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"arm {arm['name']!r}: set --trainer.max_epochs (epochs over each arm's "
                         f"data; rounds × local_epochs), got {epochs!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = write_site_splits(context.data, exp.data_args, options.split_seed, run_dir / "splits")
    memory = PeakMemory().start()
    start = time.perf_counter()
    models, log = train_arm(exp, options, paths, seed, epochs, run_dir / "flower")
    train_s = time.perf_counter() - start
    subjects = score_sites(exp, models, paths, tuple(sorted({"val", *context.stages})))
    first = next(iter(models.values()))
    metrics = {stage: subject_metric(first, rows, stage) for stage, rows in subjects.items()}
    return write_run(run_dir, first, experiment=arm["name"],
                     variant=options.strategy or options.mode, seed=seed, subjects=subjects,
                     metrics=metrics, log=log, wall_s=round(train_s, 1), **memory.stop(), git=code,
                     data={"root": str(context.data), "sha256": data_fingerprint(context.data),
                           "split_files": {n: {"path": str(p), "sha256": file_sha256(p)}
                                           for n, p in paths.items()}},
                     federated={"mode": options.mode, "site": options.site,
                                "strategy": options.strategy, "epochs": epochs,
                                "local_epochs": options.local_epochs, "sites": sorted(models),
                                **({"proximal_mu": options.proximal_mu}
                                   if options.strategy == "fedprox" else {})})
