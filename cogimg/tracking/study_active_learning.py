"""The study runner ``active_learning``: simulated labelling rounds, by uncertainty or at random.

An arm ``{name: uncertainty, config: experiments/stroke/seg_unet.yaml, runner: active_learning,
options: {strategy: uncertainty, initial: 2, per_round: 2, rounds: 2, mc_samples: 4}}`` runs,
for one seed, :func:`cogimg.paradigms.lowlabel.simulate_active_learning` on the seed's saved
subject-level split (the one the ``fit`` runner's ``--data.init_args.seed {seed}`` makes):

- the *pool* is fold 0's training participants; validation and test never change, and no
  validation or test participant is ever labelled;
- round 0 labels ``initial`` pool participants (a draw seeded by the seed alone, so every
  strategy of a seed starts from the same set); each round fits the arm's segmentation
  experiment YAML (the study's arguments, as the ``fit`` runner passes them) on the labelled
  participants only (a split file ``splits/<arm>_seed<k>_round<r>.json`` in the run folder),
  scores the validation fold (Dice of the final weights) and labels ``per_round`` more:
  ``uncertainty`` the pool participants of highest MC-dropout uncertainty — the score
  ``cogimg annotate`` ranks its review list by (mean voxel entropy of ``mc_samples`` dropout
  passes, :mod:`cogimg.paradigms.lowlabel.uncertainty`; the model needs dropout, e.g.
  ``model_kwargs: {dropout: 0.1}``) — ``random`` a draw seeded by the seed;
- after ``rounds`` rounds the last fit (``initial + rounds × per_round`` labelled) is the arm's
  run directory ``runs/<arm>/seed<k>/`` (also tested when a comparison asks for ``test``), so
  comparisons pair the strategies' final models subject by subject; earlier rounds' fits are
  not kept (an interrupted arm starts afresh).

``runs/<arm>/seed<k>/active_learning.csv`` holds the per-round curve (:data:`CURVE_COLUMNS`:
validation Dice per number of labelled participants, who was labelled, seconds per round),
which the figure kind ``active_learning`` (:mod:`cogimg.tracking.study_figures_active`) draws.
Every round gets the arm's ``budget_s``.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cogimg.io import atomic_write_text
from cogimg.tracking.study_registry import StudyContext, arm_overrides, register_runner

DEFAULTS = {"strategy": "uncertainty", "initial": 2, "per_round": 2, "rounds": 2, "mc_samples": 4}
CURVE = "active_learning.csv"
#: one row per round: round, labelled count, strategy, validation Dice of that round's fit,
#: IDs labelled after it and all labelled IDs (``;``-joined), seconds of the round (fit and
#: scoring) and of its uncertainty scoring
CURVE_COLUMNS = ("round", "n_labelled", "strategy", "val_dice", "added", "labelled", "round_s",
                 "score_s")
#: ``fit_round(round, labelled, unlabelled, final) -> (validation Dice, {unlabelled ID:
#: uncertainty})`` (scores may be empty for ``random`` and the final round)
FitRound = Callable[[int, list[str], list[str], bool], tuple[float, dict[str, float]]]


def check_options(arm: dict) -> dict:
    """The arm's options over :data:`DEFAULTS`; ``ValueError`` naming the arm and key."""
    from cogimg.paradigms.lowlabel.active import STRATEGIES

    options = {**DEFAULTS, **(arm.get("options") or {})}
    if unknown := sorted(set(options) - set(DEFAULTS)):
        raise ValueError(f"arm {arm['name']!r}: options {unknown} unknown; known: {sorted(DEFAULTS)}")
    if options["strategy"] not in STRATEGIES:
        raise ValueError(f"arm {arm['name']!r}: options.strategy {options['strategy']!r}; "
                         f"choose one of {list(STRATEGIES)}")
    for key, least in (("initial", 1), ("per_round", 1), ("rounds", 0), ("mc_samples", 2)):
        if not isinstance(options[key], int) or options[key] < least:
            raise ValueError(f"arm {arm['name']!r}: options.{key} must be an integer ≥ {least}, "
                             f"got {options[key]!r}")
    return options


def initial_labelled(pool: Sequence[str], n: int, seed: int) -> list[str]:
    """The ``n`` pool IDs labelled first: a draw seeded by ``seed`` only (sorted)."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(sorted(pool), size=n, replace=False).tolist())


def labelling_rounds(pool: Sequence[str], options: dict, seed: int, fit_round: FitRound,
                     name: str = "active_learning") -> pd.DataFrame:
    """Run the rounds of arm ``name`` (module docstring) with ``fit_round``; the curve
    (:data:`CURVE_COLUMNS`)."""
    from cogimg.paradigms.lowlabel.active import simulate_active_learning

    needed = options["initial"] + options["rounds"] * options["per_round"]
    if needed > len(pool):
        raise ValueError(f"arm {name!r}: {options['initial']} initial + {options['rounds']} rounds × "
                         f"{options['per_round']} = {needed} labelled participants, but the "
                         f"training fold has {len(pool)}: fewer rounds or a larger cohort")
    extra: list[dict] = []

    def fit_and_score(labelled: list[str], unlabelled: list[str]):
        r = len(extra)
        start = time.perf_counter()
        dice, scores = fit_round(r, labelled, unlabelled, r == options["rounds"])
        extra.append({"labelled": ";".join(sorted(labelled)), "seconds": time.perf_counter() - start})
        return dice, scores

    history = simulate_active_learning(pool, initial_labelled(pool, options["initial"], seed),
                                       fit_and_score, rounds=options["rounds"],
                                       per_round=options["per_round"], strategy=options["strategy"],
                                       seed=seed)
    history = history.rename(columns={"metric": "val_dice"})
    history["labelled"] = [e["labelled"] for e in extra]
    history["round_s"] = [round(e["seconds"], 1) for e in extra]
    history["score_s"] = 0.0
    return history[list(CURVE_COLUMNS)]


def pool_uncertainty(task, subjects: list, modalities: Sequence[str], samples: int,
                     seed: int = 0) -> dict[str, float]:
    """MC-dropout uncertainty (``cogimg annotate``'s ranking score: mean voxel entropy in nats
    of ``samples`` dropout passes, :func:`~cogimg.paradigms.lowlabel.uncertainty.subject_uncertainty`)
    of every cached, preprocessed subject of ``subjects``, averaged per ``participant_id``."""
    import torch

    from cogimg.data.cache import load_subject
    from cogimg.data.sampling import SubjectCollate
    from cogimg.paradigms.lowlabel.uncertainty import (
        enable_mc_dropout,
        probability_samples,
        subject_uncertainty,
        uncertainty_maps,
    )

    task.eval()
    if not enable_mc_dropout(task.model):
        raise ValueError("the uncertainty strategy needs a model with dropout (e.g. "
                         "--model.init_args.model_kwargs '{dropout: 0.1}'): MC dropout would "
                         "give identical samples")
    collate, scores = SubjectCollate(modalities), {}
    with torch.no_grad():
        for subject in subjects:
            batch = collate([load_subject(copy.deepcopy(subject))])
            image = batch["image"].to(task.device)
            probs = probability_samples(lambda x=image: task.predict_volume(x)[0].float(), samples, seed)
            voxel_ml = float(np.prod(batch["spacing_mm"][0].numpy())) / 1000.0
            score = subject_uncertainty(uncertainty_maps(probs), voxel_ml)["uncertainty"]
            scores.setdefault(str(subject["participant_id"]), []).append(score)
    task.eval()
    return {pid: float(np.mean(v)) for pid, v in scores.items()}


def _keeper():
    """A Lightning callback that keeps the fitted task (``.task``)."""
    from lightning.pytorch.callbacks import Callback

    class Keep(Callback):
        task = None

        def setup(self, trainer, pl_module, stage: str) -> None:
            self.task = pl_module

    return Keep()


def _base_datamodule(arm: dict, seed: int, context: StudyContext):
    """The arm's datamodule for this seed (its saved split, cached subjects), set up, unfitted."""
    from cogimg.tracking.experiment_cli import build_cli

    with tempfile.TemporaryDirectory(prefix="active_learning_") as tmp:
        cli = build_cli(["--config", arm["config"], "--trainer.default_root_dir", tmp,
                         *arm_overrides(arm, seed, context)], experiment=arm["name"])
        data = cli.datamodule
        data.prepare_data()
        data.setup("fit")
    return data


@register_runner("active_learning")
def active_learning_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> None:
    """Simulated labelling rounds of one arm × seed into ``run_dir`` (module docstring)."""
    from cogimg.data.splits import Split, load_split, save_split
    from cogimg.tracking.experiment import run_experiment

    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'active_learning' needs a config (a "
                         "segmentation experiment YAML)")
    options = check_options(arm)
    base = _base_datamodule(arm, seed, context)
    if base.label_fraction is not None:
        raise ValueError(f"arm {arm['name']!r}: label_fraction is set; the rounds choose who is labelled")
    split = load_split(base.split_path)
    fold = split.fold(base.fold)
    by_participant: dict[str, list] = {}
    for subject in base.subjects["train"]:
        by_participant.setdefault(str(subject["participant_id"]), []).append(subject)
    run_dir = Path(run_dir)
    timing: dict[int, float] = {}

    def fit_round(r: int, labelled: list[str], unlabelled: list[str], final: bool):
        path = run_dir / "splits" / f"{arm['name']}_seed{seed}_round{r}.json"
        save_split(Split(kind="custom", folds=[{"name": f"round{r}", "train": labelled,
                                                "val": fold["val"]}], test=fold["test"],
                         seed=split.seed, participants_hash=split.participants_hash), path)
        overrides = [*arm_overrides(arm, seed, context), "--data.init_args.split_file", str(path),
                     "--data.init_args.fold", "0"]
        keep = _keeper()
        with tempfile.TemporaryDirectory(prefix="active_round_") as tmp:
            result = run_experiment(arm["config"], run_dir if final else tmp, name=arm["name"],
                                    budget_s=arm.get("budget_s"), overrides=overrides,
                                    callbacks=[keep], test=final and "test" in context.stages)
        scores = {}
        if options["strategy"] == "uncertainty" and not final:
            start = time.perf_counter()
            scores = pool_uncertainty(keep.task, [s for i in unlabelled for s in by_participant[i]],
                                      base.modalities, options["mc_samples"], seed)
            timing[r] = round(time.perf_counter() - start, 1)
        return float(result.metrics["val/dice"]), scores

    curve = labelling_rounds(sorted(fold["train"]), options, seed, fit_round, arm["name"])
    curve["score_s"] = [timing.get(r, 0.0) for r in curve["round"]]
    atomic_write_text(run_dir / CURVE, curve.to_csv(index=False, lineterminator="\n"))
