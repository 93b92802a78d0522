"""Leave-site-out evaluation of a task and of its domain-adaptation variants.

For every site ``s`` of the cohort (a fold of
:func:`~cogimg.data.splits.make_leave_site_out_split`, saved once and reused): train on the
other sites and score

- **in-site**: the held-out validation subjects of the *training* sites;
- **out-of-site**: every subject of site ``s``;
- **in-site, same site** (when every site is run): site ``s``'s subjects in the other
  folds' in-site sets, scored by their baselines, which trained on site ``s`` — the
  population of ``s``'s out-of-site score, unlike in-site (other sites' subjects);
- **adapted**: out-of-site again, after one adaptation variant:

  ======== =================================================================
  histstd  TorchIO histogram standardisation, landmarks from the training sites
  dann     gradient-reversal site classifier, site ``s`` images unlabelled in training
  dann_mt  dann plus a mean teacher (EMA consistency) on site ``s``'s unlabelled images
  coral    CORAL alignment with site ``s`` (unlabelled)
  mmd      MMD alignment with site ``s`` (unlabelled)
  adabn    batch-norm statistics re-estimated on site ``s`` (no retraining)
  tent     TENT entropy minimisation on site ``s`` (no retraining)
  ======== =================================================================

Scores are the task's primary metric with a 95 % percentile bootstrap interval over
subjects: balanced accuracy (classification, class-stratified) or mean Dice (segmentation).
The model of the last training epoch is scored (no checkpoint selection on the held-out site).

Experiments are LightningCLI YAML files (``model:``/``data:``/``trainer:``), read by
:func:`~cogimg.tasks.config.load_experiment` (``Experiment.from_yaml``) with ``cogimg fit``'s
parser and model/data links; run-management keys of ``trainer`` (callbacks, loggers,
``default_root_dir``, ``enable_checkpointing``) are dropped with a warning.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from cogimg.data.datamodules import PatchDataModule, VolumeDataModule
from cogimg.data.participants import read_participants, select_diagnoses
from cogimg.data.splits import load_split, make_leave_site_out_split, save_split
from cogimg.diseases import get_preset
from cogimg.metrics.bootstrap import mean_ci
from cogimg.metrics.classification import balanced_accuracy, bootstrap_ci
from cogimg.paradigms.adaptation.datamodule import (
    TargetSitePatchDataModule,
    TargetSiteVolumeDataModule,
)
from cogimg.paradigms.adaptation.domain import DomainAdaptation
from cogimg.paradigms.adaptation.test_time import adapt_batchnorm, tent
from cogimg.paradigms.lowlabel import SemiSupervised
from cogimg.tasks.config import Experiment

VARIANTS = ("histstd", "dann", "dann_mt", "coral", "mmd", "adabn", "tent")
TRAINED_VARIANTS = ("baseline", "histstd", "dann", "dann_mt", "coral", "mmd")
# variants trained with the held-out site's images as an unlabelled ``target`` stream
_TARGET_VARIANTS = ("dann", "dann_mt", "coral", "mmd")
# --------------------------------------------------------------------------- scoring
def _classification_score(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    value = balanced_accuracy(labels, prob.argmax(axis=1))
    low, high = bootstrap_ci(labels, prob, "balanced_accuracy", n_boot=1000, seed=0)
    return {"metric": "balanced_accuracy", "value": value, "ci_low": low, "ci_high": high, "n": len(labels)}


def _dice_score(dice: np.ndarray) -> dict[str, float]:
    low, high = mean_ci(dice)
    return {"metric": "dice", "value": float(dice.mean()), "ci_low": low, "ci_high": high, "n": len(dice)}


def subject_scores(task, stage: str) -> tuple:
    """``(ids, labels, prob)`` (classification) or ``(ids, dice)`` (segmentation) of ``stage``."""
    if task.kind == "classification":
        return task.subject_table(stage)
    rows = task.subject_rows[stage]
    return [r["subject_id"] for r in rows], np.array([r["dice"] for r in rows], dtype=float)


def score_subjects(*arrays: np.ndarray) -> dict[str, float] | None:
    """The primary metric of ``subject_scores`` arrays (without ids); ``None`` if undefined."""
    if len(arrays) == 1:
        return _dice_score(arrays[0]) if len(arrays[0]) else None
    labels, prob = arrays
    if len(set(labels.tolist())) < prob.shape[1]:  # a class missing: BA is not defined
        return None
    return _classification_score(labels, prob)


def score(task, stage: str) -> dict[str, float]:
    """Primary metric of ``task``'s subject rows of ``stage``, with a 95 % bootstrap CI."""
    if task.kind == "classification":
        return _classification_score(*task.subject_table(stage)[1:])
    return _dice_score(subject_scores(task, stage)[1])


# --------------------------------------------------------------------------- protocol
class LeaveSiteOut:
    """Runs the protocol (see the module docstring) for one experiment.

    Args:
        experiment: the parsed experiment.
        out_dir: where the split (``split.json``) and results go.
        val_fraction: share of the training sites' subjects held out as in-site validation.
        tent_steps, tent_lr: TENT passes over the held-out site and its learning rate.
        log: progress messages (``print`` by default).
        train_seed: ``lightning.seed_everything`` seed of every training (weight init and
            anything else drawn from the global RNGs); ``None``: the experiment's seed. The
            split is always made with the experiment's seed, so runs that differ only in
            ``train_seed`` score the same subjects (repeats that can be paired).
        mean_teacher: options of ``dann_mt``'s mean teacher (:class:`SemiSupervised`
            keyword arguments other than ``method`` and ``stream``); ``None``: its defaults.

    After :meth:`run`, ``subject_rows`` holds one row per scored subject:
    ``{site, variant, scope, subject_id, value}`` with ``value`` the subject's Dice
    (segmentation) or 1/0 for a correct/wrong prediction (classification, plus ``label``).
    """

    def __init__(self, experiment: Experiment, out_dir: str | Path, val_fraction: float = 0.2,
                 tent_steps: int = 1, tent_lr: float = 1e-3, log: Callable[[str], None] = print,
                 train_seed: int | None = None, mean_teacher: dict[str, Any] | None = None) -> None:
        self.exp, self.out_dir = experiment, Path(out_dir)
        self.val_fraction, self.tent_steps, self.tent_lr, self.log = val_fraction, tent_steps, tent_lr, log
        self.train_seed = experiment.seed if train_seed is None else int(train_seed)
        self.mean_teacher = dict(mean_teacher or {})
        self.subject_rows: list[dict[str, Any]] = []
        data_root = self.exp.data_args.get("data_root")
        if data_root is None:
            raise ValueError("the experiment's data.init_args has no data_root")
        self.data_root = Path(data_root)
        self.preset = get_preset(self.exp.data_args.get("preset", "ad" if self.exp.data_class is VolumeDataModule
                                                        else "stroke"))

    def split_path(self) -> Path:
        """The leave-site-out split, made once (preset's diagnoses only) and reused."""
        # Named by preset, seed and held-out percentage: another val_fraction must not reuse a
        # split saved for this one, nor the histogram landmarks cached under the split's name.
        name = f"lso_{self.preset.name}_seed{self.exp.seed}_val{round(100 * self.val_fraction)}"
        path = self.out_dir / f"{name}.json"
        if not path.exists():
            table = select_diagnoses(read_participants(self.data_root / "participants.tsv"), self.preset.diagnoses)
            stratify = "diagnosis" if self.preset.task == "classification" else None
            split = make_leave_site_out_split(table, val_fraction=self.val_fraction, stratify=stratify,
                                              seed=self.exp.seed)
            save_split(split, path)
        return path

    def sites(self) -> list[str]:
        return load_split(self.split_path()).fold_names

    def _datamodule(self, site: str, variant: str):
        args = {**self.exp.data_args, "split_file": str(self.split_path()), "fold": self.sites().index(site)}
        cls = self.exp.data_class
        if variant == "histstd":
            args["histogram_standardization"] = True
        plain = PatchDataModule if issubclass(cls, PatchDataModule) else VolumeDataModule
        if variant in _TARGET_VARIANTS:  # the held-out site's images, unlabelled
            cls = TargetSitePatchDataModule if plain is PatchDataModule else TargetSiteVolumeDataModule
        elif cls is not plain:
            cls = plain
            args.pop("target_subset", None)
            args.pop("target_batch_size", None)
        return cls(**args)

    def _task(self, variant: str, adaptation_weight: float):
        args = dict(self.exp.task_args)
        if variant in _TARGET_VARIANTS:
            method = "dann" if variant == "dann_mt" else variant
            addons = [DomainAdaptation(method=method, weight=adaptation_weight)]
            if variant == "dann_mt":  # and self-ensembling on the same unlabelled target stream
                addons.append(SemiSupervised(method="mean_teacher", **{**self.mean_teacher, "stream": "target"}))
            args["addons"] = [*(args.get("addons") or []), *addons]
        return self.exp.task_class(**args)

    def _trainer(self, **kwargs) -> L.Trainer:
        args = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
                "default_root_dir": str(self.out_dir), **self.exp.trainer_args, **kwargs}
        return L.Trainer(**args)

    def _train(self, site: str, variant: str, adaptation_weight: float):
        L.seed_everything(self.train_seed, verbose=False)
        dm, task = self._datamodule(site, variant), self._task(variant, adaptation_weight)
        start = time.perf_counter()
        self._trainer(limit_val_batches=0).fit(task, datamodule=dm)
        self.log(f"  {site} {variant}: trained in {time.perf_counter() - start:.0f} s")
        return task, dm

    def _evaluate(self, task, dm, stage: str) -> dict[str, float]:
        evaluator = self._trainer()
        (evaluator.validate if stage == "val" else evaluator.test)(task, datamodule=dm, verbose=False)
        return score(task, stage)

    def _test_time(self, task, dm, variant: str) -> dict[str, float]:
        batches = list(dm.test_dataloader())  # the held-out site's images; labels unused
        def forward(model, batch):
            return task.evaluation_logits(batch, model)

        if variant == "adabn":
            adapted = adapt_batchnorm(task.model, batches, forward)
        else:
            adapted = tent(task.model, batches, forward, lr=self.tent_lr, steps=self.tent_steps)
        original, task.model = task.model, adapted
        try:
            return self._evaluate(task, dm, "test")
        finally:
            task.model = original

    def run(self, variants: Sequence[str] = VARIANTS, sites: Sequence[str] | None = None,
            adaptation_weight: float = 0.1) -> list[dict[str, Any]]:
        """Rows ``{site, variant, scope, metric, value, ci_low, ci_high, n}`` for every site."""
        if unknown := [v for v in variants if v not in VARIANTS]:
            raise ValueError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
        all_sites = self.sites()
        if unknown := [s for s in (sites or []) if s not in all_sites]:
            raise ValueError(f"site(s) {unknown} not in the cohort's sites {all_sites}")
        rows: list[dict[str, Any]] = []
        in_site_tables: dict[str, tuple] = {}  # held-out site → (ids, labels, prob) of its in-site set
        self.subject_rows = []

        def add(row: dict[str, Any], task=None, stage: str = "test") -> None:  # logged as it comes
            rows.append(row)
            if task is not None:  # the per-subject scores behind the row
                self.subject_rows.extend(_per_subject(task, stage, row))
            self.log(f"  {row['site']} {row['variant']} {row['scope']}: {row['metric']} "
                     f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}] (n={row['n']})")

        for site in sites or all_sites:
            self.log(f"held-out site {site}")
            base, dm = self._train(site, "baseline", adaptation_weight)
            add({"site": site, "variant": "baseline", "scope": "in_site", **self._evaluate(base, dm, "val")},
                base, "val")
            in_site_tables[site] = subject_scores(base, "val")
            add({"site": site, "variant": "baseline", "scope": "out_of_site", **self._evaluate(base, dm, "test")},
                base)
            for variant in variants:
                if variant in ("adabn", "tent"):
                    result, task = self._test_time(base, dm, variant), base
                else:
                    task, vdm = self._train(site, variant, adaptation_weight)
                    result = self._evaluate(task, vdm, "test")
                add({"site": site, "variant": variant, "scope": "out_of_site", **result}, task)
        if len(in_site_tables) == len(all_sites):
            for row in self._same_site_rows(in_site_tables):
                add(row)
        return rows

    def _same_site_rows(self, tables: dict[str, tuple]) -> list[dict[str, Any]]:
        """``in_site_same_site`` of site ``s``: the site-``s`` subjects of the other folds'
        in-site sets, scored by those folds' baselines (which trained on site ``s``). Unlike
        ``in_site`` (other sites' subjects) it is the same population as ``s``'s out-of-site
        score, so the per-site drop is not confounded by how hard each site's images are."""
        site_of = read_participants(self.data_root / "participants.tsv")["site"].astype(str)
        rows = []
        for site in tables:
            parts = []  # per other fold: its in-site arrays (without ids), site-s subjects only
            for held, (ids, *arrays) in tables.items():
                if held != site:
                    mine = site_of.loc[list(ids)].to_numpy() == site
                    parts.append([np.asarray(a)[mine] for a in arrays])
            result = score_subjects(*(np.concatenate(column) for column in zip(*parts)))
            if result is not None:
                rows.append({"site": site, "variant": "baseline", "scope": "in_site_same_site", **result})
        return rows


def _per_subject(task, stage: str, row: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per subject of ``task``'s last ``stage`` evaluation, keyed like ``row``."""
    key = {k: row[k] for k in ("site", "variant", "scope")}
    ids, *arrays = subject_scores(task, stage)
    if len(arrays) == 1:  # segmentation: Dice
        return [{**key, "subject_id": str(i), "value": float(v)} for i, v in zip(ids, arrays[0])]
    labels, prob = arrays
    return [{**key, "subject_id": str(i), "value": float(p.argmax() == y), "label": int(y)}
            for i, y, p in zip(ids, labels, prob)]
