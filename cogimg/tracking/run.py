"""Run directories: what every fit leaves behind so that it can be reported and reproduced.

A run directory is the Lightning log directory of one fit,
``<default_root_dir>/lightning_logs/version_<N>/``, holding:

* ``config.yaml`` — the resolved LightningCLI config (written by Lightning's SaveConfigCallback);
* ``manifest.json`` (provenance from :mod:`cogimg.tracking.provenance`) — run id, experiment name, command line, git commit (+ dirty flag),
  package versions, seed, data fingerprint (sha256) and split file (path + sha256), device,
  task / model / variant, parameter count, one entry per fit (start, wall time in s, peak
  memory of the process tree in GiB — PSS, see :class:`PeakMemory` —, peak CUDA memory in
  GiB, checkpoint resumed from) and their totals;
* ``metrics.json`` — the last validation (``val``) and test (``test``) metrics, epoch, step,
  the monitored best checkpoint, and extras such as inference latency (s);
* ``subjects_val.csv`` / ``subjects_test.csv`` — one row per subject (the task's
  ``subject_rows``);
* ``metrics.csv`` + ``hparams.yaml`` (CSV logger, always), ``checkpoints/`` (``last.ckpt``
  always) and ``wandb/`` (W&B, offline by default; ``COGIMG_WANDB=off|offline|online``;
  upload an offline run later with ``wandb sync <run dir>/wandb/offline-run-*``).

Results that no single fit records (a federated simulation, whose clients fit once per round)
are written in the same layout by :func:`write_run`.

Resuming (``cogimg fit --config X.yaml --ckpt_path <run dir>/checkpoints/last.ckpt``)
continues the same run directory: the CSV logger reuses its version, the manifest gains a
fit entry and keeps its run id, and the total wall time adds up (the recorder's state travels
in the checkpoint).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback

from cogimg.io import atomic_write_text
from cogimg.tracking.provenance import (
    PeakMemory,
    data_fingerprint,
    device_info,
    file_sha256,
    provenance,
)

MANIFEST, METRICS = "manifest.json", "metrics.json"
#: manifest entries that :func:`write_run` needs from its caller when it gets no LightningModule
REQUIRED_WITHOUT_TASK = ("task", "kind", "model")
WANDB_MODES = ("off", "offline", "online")


# ----------------------------------------------------------------------------- files
def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def write_json(path: Path, data: dict) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def update_metrics(run_dir: str | Path, **values: Any) -> dict:
    """Merge ``values`` into ``metrics.json`` under ``extra`` (e.g. ``latency_s=0.8``)."""
    path = Path(run_dir) / METRICS
    metrics = read_json(path) if path.is_file() else {}
    metrics.setdefault("extra", {}).update(values)
    write_json(path, metrics)
    return metrics


def resume_version(ckpt_path: str | Path | None) -> int | str | None:
    """The logger version of the run that wrote ``<…>/lightning_logs/<version>/checkpoints/X.ckpt``
    (so a resumed fit logs into the same run directory); ``None`` for any other path."""
    if not ckpt_path or str(ckpt_path) in ("last", "best", "hpc", "registry"):
        return None
    path = Path(ckpt_path)
    if path.parent.name != "checkpoints":
        return None
    name = path.parent.parent.name
    if name.startswith("version_") and name[len("version_"):].isdigit():
        return int(name[len("version_"):])
    return name


def default_loggers(root_dir: str | Path, experiment: str, version: int | str | None = None,
                    wandb_mode: str | None = None, run_id: str | None = None) -> list:
    """CSV logger (always, first: it names the run directory) + W&B logger unless the mode is
    ``off``. The mode defaults to ``$COGIMG_WANDB`` or ``offline`` (no login, no network)."""
    from lightning.pytorch.loggers import CSVLogger

    mode = wandb_mode or os.environ.get("COGIMG_WANDB", "offline")
    if mode not in WANDB_MODES:
        raise ValueError(f"COGIMG_WANDB={mode!r}; choose one of {list(WANDB_MODES)}")
    csv = CSVLogger(save_dir=str(root_dir), name="lightning_logs", version=version)
    loggers = [csv]
    if mode != "off":
        import wandb
        from lightning.pytorch.loggers import WandbLogger

        if wandb.run is not None:
            # W&B keeps one run per process and WandbLogger would reuse it: close the previous
            # fit's run so that fits in one process (benchmark, sweep) get their own.
            wandb.finish()
        # The CSV logger creates the run directory first: created by W&B instead, it would be
        # non-empty and the CSV logger would warn that it deletes "previous" log files.
        csv.experiment  # noqa: B018
        run_dir = Path(csv.log_dir)
        if mode == "offline":
            os.environ["WANDB_MODE"] = "offline"  # also covers wandb calls outside the logger
        os.environ.setdefault("WANDB_SILENT", "true")
        existing = run_dir / MANIFEST
        run_id = run_id or (read_json(existing).get("run_id") if existing.is_file() else None) \
            or uuid.uuid4().hex[:12]
        loggers.append(WandbLogger(name=experiment, save_dir=str(run_dir), id=run_id,
                                   offline=mode == "offline", resume="allow",
                                   project=os.environ.get("WANDB_PROJECT", "cogimg")))
    return loggers


def describe_task(pl_module=None, variant: str | None = None) -> dict[str, Any]:
    """Manifest entries of a task: ``task`` (class path), its protocol's ``kind``,
    ``primary_metric`` and ``metric_mode``, ``model``, ``variant`` (default: the fusion strategy
    when the task has one, else ``"default"``) and ``params`` (count).

    ``pl_module=None`` (a run made without a LightningModule, e.g. scikit-learn models): only
    ``variant``; the caller gives the others it has (no ``params`` entry: the leaderboard
    averages the ones that runs record).
    """
    if pl_module is None:
        return {"variant": variant or "default"}
    from cogimg.models.profiling import count_parameters

    hp = dict(getattr(pl_module, "hparams", {}))
    return {"task": f"{type(pl_module).__module__}.{type(pl_module).__qualname__}",
            "kind": getattr(pl_module, "kind", ""),
            "primary_metric": getattr(pl_module, "primary_metric", ""),
            "metric_mode": getattr(pl_module, "metric_mode", "max"),
            # fusion "tabular" never builds the image backbone that hparams still name
            "model": "tabular_mlp" if hp.get("fusion") == "tabular" else hp.get("model"),
            "variant": variant or hp.get("fusion") or "default",
            "params": count_parameters(pl_module)}


def describe_data(datamodule) -> dict[str, Any]:
    """Manifest entry ``data``: root + fingerprint, preset, fold, split file + sha256."""
    data_root = getattr(datamodule, "data_root", None)
    split = getattr(datamodule, "split_path", None)
    return {"root": str(data_root) if data_root else None,
            "sha256": data_fingerprint(data_root) if data_root and Path(data_root).is_dir() else None,
            "preset": getattr(getattr(datamodule, "preset", None), "name", None),
            "fold": getattr(datamodule, "fold", None),
            "split_file": str(split) if split else None,
            "split_sha256": file_sha256(split) if split and Path(split).is_file() else None}


def start_config_run(out: str | Path, config: dict, *, overwrite: bool = False) -> Path:
    """Claim ``out`` for a run made outside Lightning (scikit-learn, cross-validation) and write
    its ``config.yaml``: a folder that already records a run is refused unless ``overwrite``
    (then its manifest is removed first, so a crash never leaves the old run looking finished).
    Returns ``out``."""
    import yaml

    out = Path(out)
    if (out / MANIFEST).exists():
        if not overwrite:
            raise FileExistsError(f"{out / MANIFEST} already records a run; pass --overwrite "
                                  "or choose another --out")
        (out / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml",
                      yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True))
    return out


def _plain(value):
    """``value`` with paths as strings (for YAML)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value

def write_run(run_dir: str | Path, pl_module=None, *, experiment: str, variant: str, seed: int | None,
              subjects: dict[str, list[dict]], metrics: dict[str, dict[str, float]],
              log: list[dict] | None = None, **manifest: Any) -> Path:
    """Write a finished run directory for a result that no single Lightning fit recorded (a
    federated simulation, whose clients fit once per round; models fitted once per fold, with
    or without a LightningModule), in the layout that
    :mod:`cogimg.tracking.leaderboard`, the figures and the report read.

    Args:
        run_dir: new folder; one that already holds a ``manifest.json`` is refused.
        pl_module: the (final) task, for its class, model name and parameter count; ``None``
            for a run made without one (then ``manifest`` names ``task``, ``kind`` and
            ``model``, see :data:`REQUIRED_WITHOUT_TASK`).
        experiment, variant, seed: the leaderboard's grouping (seeds are repeats).
        subjects: ``{stage: rows}`` → ``subjects_<stage>.csv``.
        metrics: ``{stage: {"<stage>/<name>": value}}`` → ``metrics.json``.
        log: rows of ``metrics.csv`` (``epoch`` and e.g. ``val/dice``: the learning curve).
        **manifest: further manifest entries (``wall_s``, ``peak_memory_gb``, ``data`` …).

    The manifest is written last: an interrupted call leaves no run that the leaderboard reads.
    """
    import pandas as pd

    from cogimg.metrics.segmentation import write_subject_csv

    if pl_module is None and (missing := [k for k in REQUIRED_WITHOUT_TASK
                                          if manifest.get(k) is None]):
        raise ValueError(f"write_run without a pl_module needs the manifest entries {missing}")
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).exists():
        raise FileExistsError(f"{run_dir / MANIFEST} already records a run; choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    for stage, rows in subjects.items():
        write_subject_csv(rows, run_dir / f"subjects_{stage}.csv", overwrite=True)
    write_json(run_dir / METRICS, metrics)
    if log:
        atomic_write_text(run_dir / "metrics.csv", pd.DataFrame(log).to_csv(index=False))
    write_json(run_dir / MANIFEST, {
        "run_id": uuid.uuid4().hex[:12], "experiment": experiment, **describe_task(pl_module, variant),
        "seed": seed, **provenance(), **manifest, "status": "finished"})
    return run_dir


# ----------------------------------------------------------------------------- callback
class RunRecorder(Callback):
    """Writes ``manifest.json``, ``metrics.json`` and ``subjects_<stage>.csv`` into the run
    directory (``trainer.log_dir``) — see the module docstring.

    Args:
        experiment: experiment name (the config file's stem by default in ``cogimg fit``).
        seed: the global seed of the run.
        config_files: config files the run was built from (recorded with their sha256).
        variant: free-form variant label for the leaderboard (default: the task's fusion
            strategy when it has one, else ``"default"``).
    """

    def __init__(self, experiment: str = "run", seed: int | None = None,
                 config_files: list[str] | None = None, variant: str | None = None) -> None:
        self.experiment, self.seed, self.variant = experiment, seed, variant
        self.config_files = [str(c) for c in (config_files or [])]
        self.run_id: str | None = None
        self.previous_wall_s = 0.0
        self._start = 0.0
        self._memory: PeakMemory | None = None
        self.run_dir: Path | None = None

    # -- checkpointed state: a resumed fit continues the same run
    def state_dict(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self._start if self._start else 0.0
        return {"run_id": self.run_id, "wall_s": self.previous_wall_s + elapsed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run_id = state_dict.get("run_id") or self.run_id
        self.previous_wall_s = float(state_dict.get("wall_s", 0.0))

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.run_dir = Path(trainer.log_dir or trainer.default_root_dir)

    # -- fit
    def on_fit_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        path = self.run_dir / MANIFEST
        manifest = read_json(path) if path.is_file() else {}
        self.run_id = self.run_id or manifest.get("run_id") or _wandb_id(trainer) or uuid.uuid4().hex[:12]
        if manifest and not trainer.ckpt_path:
            raise FileExistsError(f"{path} already records a run; resume it with --ckpt_path "
                                  f"{self.run_dir / 'checkpoints' / 'last.ckpt'} or use another run directory")
        manifest.update(self._describe(trainer, pl_module), status="running")
        manifest.setdefault("fits", []).append(
            {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "resumed_from": str(trainer.ckpt_path) if trainer.ckpt_path else None})
        write_json(path, manifest)
        self._memory = PeakMemory().start()
        self._start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self._start:
            return
        wall = time.perf_counter() - self._start
        memory = self._memory.stop() if self._memory else {}
        self._start, self.previous_wall_s = 0.0, self.previous_wall_s + wall
        path = self.run_dir / MANIFEST
        manifest = read_json(path)
        manifest["fits"][-1].update(wall_s=round(wall, 2), epochs=trainer.current_epoch,
                                    global_step=trainer.global_step, **memory)
        manifest.update(wall_s=round(self.previous_wall_s, 2), status="finished")
        for key in ("peak_memory_gb", "peak_cuda_gb"):
            manifest[key] = max(f.get(key, 0.0) for f in manifest["fits"])
        write_json(path, manifest)
        self._write_metrics(trainer, pl_module, "val")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # An interrupted fit (pruned trial, error, Ctrl-C) says so; its last.ckpt resumes it.
        if trainer.is_global_zero and self._start and self.run_dir is not None:
            path = self.run_dir / MANIFEST
            manifest = read_json(path)
            wall = time.perf_counter() - self._start
            memory = self._memory.stop() if self._memory else {}
            self._start, self.previous_wall_s = 0.0, self.previous_wall_s + wall
            manifest["fits"][-1].update(wall_s=round(wall, 2), epochs=trainer.current_epoch,
                                        global_step=trainer.global_step, **memory)
            manifest.update(wall_s=round(self.previous_wall_s, 2),
                            status=f"interrupted ({type(exception).__name__}: {exception})")
            write_json(path, manifest)

    def _describe(self, trainer, pl_module) -> dict[str, Any]:
        return {"run_id": self.run_id, "experiment": self.experiment,
                **describe_task(pl_module, self.variant), "seed": self.seed, **provenance(),
                "config_files": {c: file_sha256(c) for c in self.config_files if Path(c).is_file()},
                "device": device_info(trainer), "data": describe_data(trainer.datamodule)}

    # -- evaluation
    def on_validation_end(self, trainer, pl_module) -> None:
        # Every validation (in fit or `validate`) refreshes the last validation metrics.
        if trainer.is_global_zero and not trainer.sanity_checking:
            self._write_metrics(trainer, pl_module, "val")

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._write_metrics(trainer, pl_module, "test")

    def _write_metrics(self, trainer, pl_module, stage: str) -> None:
        path = self.run_dir / METRICS
        metrics = read_json(path) if path.is_file() else {}
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(f"{stage}/")}
        if not values:
            return
        metrics[stage] = values
        metrics.update(epoch=trainer.current_epoch, global_step=trainer.global_step)
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.monitor and ckpt.best_model_score is not None:
            metrics["best"] = {"monitor": ckpt.monitor, "score": float(ckpt.best_model_score),
                               "path": ckpt.best_model_path}
        write_json(path, metrics)
        rows = getattr(pl_module, "subject_rows", {}).get(stage)
        if rows:
            from cogimg.metrics.segmentation import write_subject_csv

            write_subject_csv(rows, self.run_dir / f"subjects_{stage}.csv", overwrite=True)


def _wandb_id(trainer) -> str | None:
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            return logger._id  # set before the experiment starts (no network access)
    return None
