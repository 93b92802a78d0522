"""The study runner ``outcome``: one cross-validated outcome model (lesion → NIHSS) per arm × seed.

An arm ``{name: svr, config: experiments/outcome/svr.yaml, runner: outcome}`` runs
:func:`cogimg.paradigms.outcome.cross_validate` on the arm's outcome YAML into
``runs/<arm>/seed<k>/`` (a run directory of kind ``regression``:
:func:`cogimg.tracking.outcome.write_outcome_run`; ``subjects_val.csv`` holds one
out-of-fold prediction per participant: ``subject_id, fold, target, pred``). For seed ``k``
every arm uses the same participant-level k-fold split with split seed ``k``
(``--out/splits/seed<k>.json``, made by the first arm, reused by the others), so a study
comparison of two arms (``metric: pearson_r`` or ``mae``, ``stage: val``) is paired over
participants and seeds repeat the cross-validation on new splits. The YAML's ``reference``
is dropped: the reference is an arm of its own, compared by the study.

The masks are read once per data section and kept in ``--out/cache`` as an ``.npz``
(:func:`cached_cohort`), keyed by the data section and the mask files' names, sizes and times.

Arguments (an arm's ``overrides`` and the study's or preset's common ones, in that order; later
ones win), as ``--<key> <value>`` pairs with ``{seed}`` replaced by the seed and ``{data}`` by
the study's data root, values read as YAML:

* ``--<section>.<key> <value>`` sets a key of the outcome YAML (``--cv.n_folds 3``,
  ``--data.layout bids``, ``--model.features "[covariates, log_volume]"``, ``--bootstrap
  200``);
* ``--cnn.<key> <value>`` sets a CNN parameter (:data:`cogimg.tasks.regression.CNN_DEFAULTS`:
  ``max_epochs``, ``batch_size`` …) of an arm whose model is the CNN and is ignored by the
  classical models, so one preset sizes the CNN arm without touching the others.

``data.layout: bids`` without ``data.root`` reads the study's BIDS root (its ``cohort`` or
``data``): masks under ``derivatives/<data.derivative>``, scores in ``participants.tsv``.
``layout: soop`` reads the files the YAML names (paths relative to the working directory).
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import yaml

from cogimg.tracking.study_registry import StudyContext, register_runner

_ARRAYS = ("scores", "covariates", "lesion_volume_ml", "territory_load", "maps", "map_affine",
           "mask_affine")


def outcome_config(config: dict, overrides: list[str], seed: int, name: str, run_dir: Path,
                   context: StudyContext) -> dict:
    """``config`` (a loaded outcome YAML) with an arm's arguments applied (module docstring):
    split seed ``seed`` and its shared split file, no in-run reference, ``out`` = ``run_dir``.

    Raises ``ValueError`` naming the argument for an odd number of arguments, a key without
    ``--``, or a ``--cnn.`` key the CNN does not know."""
    from cogimg.tasks.regression import CNN_DEFAULTS

    config = copy.deepcopy(config)
    args = [str(o).replace("{seed}", str(seed)).replace("{data}", str(context.data))
            for o in overrides]
    if len(args) % 2:
        raise ValueError(f"arm {name!r}: overrides {args}: expected --key value pairs")
    for key, text in zip(args[::2], args[1::2]):
        if not key.startswith("--"):
            raise ValueError(f"arm {name!r}: override {key!r}: expected --<section>.<key>")
        value, path = yaml.safe_load(text), key[2:].split(".")
        if path[0] == "cnn":
            if len(path) != 2 or path[1] not in CNN_DEFAULTS:
                raise ValueError(f"arm {name!r}: override {key!r}: CNN keys are "
                                 f"{sorted(CNN_DEFAULTS)}")
            for section in ("model", "reference"):
                if (config.get(section) or {}).get("name") == "cnn":
                    config[section].setdefault("params", {})[path[1]] = value
            continue
        node = config
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    data = config["data"]
    if data.get("layout") == "bids" and not data.get("root"):
        data["root"] = str(context.data)
        for key in ("mask_dir", "scores"):
            data.pop(key, None)
    config.pop("reference", None)
    split_dir = context.out / "splits"
    split_dir.mkdir(parents=True, exist_ok=True)
    config["cv"] = {**config.get("cv", {}), "seed": seed,
                    "split": str(split_dir / f"seed{seed}.json")}
    return {**config, "out": str(run_dir), "experiment": name}


def cached_cohort(data: dict, cache_dir: Path):
    """The :class:`~cogimg.data.outcome.OutcomeCohort` of the data section ``data``, read once
    and kept as an uncompressed ``.npz`` in ``cache_dir`` (keyed by the section and the mask
    files' names, sizes and modification times); returns ``(cohort, read_from_cache)``."""
    from cogimg.data.outcome import OutcomeCohort, find_bids_masks, find_soop_masks
    from cogimg.io import atomic_path
    from cogimg.paradigms.outcome import load_cohort

    if data.get("layout", "soop") == "soop":
        masks = find_soop_masks(data["mask_dir"])
        files = [*masks.values(), Path(data["scores"])]
    else:
        masks = find_bids_masks(data["root"], data.get("derivative"))
        files = [*masks.values(), Path(data.get("scores") or Path(data["root"]) / "participants.tsv")]
    if data.get("atlas"):
        files.append(Path(data["atlas"]))
    key = json.dumps([data, sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)],
                     sort_keys=True, default=str)
    path = Path(cache_dir) / f"outcome_cohort_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        meta["mask_shape"] = tuple(meta["mask_shape"])
        return OutcomeCohort(**{k: z[k] for k in _ARRAYS}, **meta), True
    cohort = load_cohort(data)
    meta = {"ids": cohort.ids, "covariate_names": cohort.covariate_names,
            "territory_names": cohort.territory_names, "downsample": cohort.downsample,
            "mask_shape": list(cohort.mask_shape), "score_name": cohort.score_name,
            "excluded": cohort.excluded}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, meta=json.dumps(meta), **{k: getattr(cohort, k) for k in _ARRAYS})
    return cohort, False


@register_runner("outcome", own_data=True)
def outcome_runner(arm: dict, seed: int, run_dir: Path, context: StudyContext) -> dict:
    """Cross-validate the arm's outcome YAML with split seed ``seed`` into ``run_dir``
    (module docstring); returns the metrics of :func:`cogimg.paradigms.outcome.cross_validate`."""
    from cogimg.paradigms.outcome import load_config
    from cogimg.tracking.outcome import run_outcome_experiment

    if not arm.get("config"):
        raise ValueError(f"arm {arm['name']!r}: runner 'outcome' needs a config (an outcome YAML)")
    config = outcome_config(load_config(arm["config"]), arm["overrides"], seed, arm["name"],
                            Path(run_dir), context)
    cohort, _ = cached_cohort(config["data"], context.cache)
    return run_outcome_experiment(config, cohort)
