"""Run one experiment YAML (optionally under a wall-time cap) and record how it learned.

Shared by ``cogimg demo`` and the benchmarks that compare architectures: the YAML (plus
overrides) is parsed by the same LightningCLI as ``cogimg fit``, a callback records the
validation metrics against training wall time, and the result gathers what a leaderboard
row needs (final metrics, per-subject rows, parameters, training time, inference latency,
peak memory). The fit also writes a normal run directory (:mod:`cogimg.tracking.run`:
manifest, metrics, per-subject rows, checkpoints) under ``<run_dir>/lightning_logs/``, whose
``metrics.json`` gains the measured inference latency.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lightning.pytorch import Callback

from cogimg.io import atomic_write_text
from cogimg.metrics.segmentation import write_subject_csv
from cogimg.models.profiling import count_parameters
from cogimg.tracking.experiment_cli import build_cli
from cogimg.tracking.run import MANIFEST, read_json, update_metrics


class LearningCurve(Callback):
    """Validation metrics vs. seconds of training (wall time of fit minus validation time)."""

    def __init__(self, keys: tuple[str, ...] = ("val/dice",)) -> None:
        self.keys = keys
        self.points: list[dict[str, float]] = []
        self._fit_start = self._val_start = 0.0
        self._val_s = 0.0
        #: ``(global step, {"val/...": value})`` of the last validation during fit.
        self.last_validation: tuple[int, dict[str, float]] | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start, self._val_s = time.perf_counter(), 0.0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        # (not on_validation_epoch_end: the task logs its metrics after the callbacks' hook)
        now = time.perf_counter()
        self._val_s += now - self._val_start
        if trainer.sanity_checking or not self._fit_start:
            return
        point = {"train_s": round(now - self._fit_start - self._val_s, 2),
                 "step": trainer.global_step}
        for key in self.keys:
            if key in trainer.callback_metrics:
                point[key] = float(trainer.callback_metrics[key])
        self.points.append(point)
        self.last_validation = (trainer.global_step, {k: float(v) for k, v in trainer.callback_metrics.items()
                                                      if k.startswith("val/")})

    def on_fit_end(self, trainer, pl_module) -> None:
        self._fit_start = 0.0  # validations after fit are not part of the curve


@dataclass
class ExperimentResult:
    """What one budgeted run produced (JSON-serialisable)."""

    name: str
    model: str
    params: int
    steps: int
    train_s: float
    latency_s: float
    peak_memory_gb: float | None  # the fit's process tree (PSS), from its manifest
    metrics: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)
    run_dir: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def run_experiment(config: str | Path, run_dir: str | Path, overrides: list[str] = (),
                   budget_s: float | None = None, name: str | None = None, callbacks: list = (),
                   ckpt_path: str | Path | None = None, test: bool = False) -> ExperimentResult:
    """Fit ``config`` (with LightningCLI-style ``overrides``; for at most ``budget_s`` seconds
    of wall time when given), then validate the final weights (unless fit's last validation
    already did, at the final step); writes ``result.json`` and
    ``subjects.csv`` into ``run_dir``. ``callbacks`` are added to the trainer's (e.g. a
    pruning callback); ``ckpt_path`` resumes that checkpoint's run; ``test`` also scores the
    final weights on the held-out test subjects (the run's ``subjects_test.csv``)."""
    run_dir = Path(run_dir)
    args = ["--config", str(config), "--trainer.default_root_dir", str(run_dir),
            "--trainer.enable_progress_bar", "false", *overrides]
    if budget_s is not None:
        days, rest = divmod(int(budget_s), 86400)
        hours, rest = divmod(rest, 3600)
        args += ["--trainer.max_time", f"{days:02d}:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"]
    cli = build_cli(args, experiment=name or Path(config).stem,
                    resume_from=str(ckpt_path) if ckpt_path else None)
    curve = LearningCurve()
    cli.trainer.callbacks.extend([curve, *callbacks])
    task, data = cli.model, cli.datamodule
    start = time.perf_counter()
    cli.trainer.fit(task, datamodule=data, ckpt_path=str(ckpt_path) if ckpt_path else None)
    train_s = time.perf_counter() - start
    if curve.last_validation and curve.last_validation[0] == cli.trainer.global_step:
        final = curve.last_validation[1]  # fit ended right after validating these weights
    else:
        final = cli.trainer.validate(task, datamodule=data, verbose=False)[0]
    rows = task.subject_rows["val"]
    if test:
        cli.trainer.test(task, datamodule=data, verbose=False)
    latency = _inference_latency(task, data)
    log_dir = Path(cli.trainer.log_dir or run_dir)
    peak_memory_gb = None
    if (log_dir / MANIFEST).is_file():
        update_metrics(log_dir, latency_s=round(latency, 4))
        peak_memory_gb = read_json(log_dir / MANIFEST).get("peak_memory_gb")
    result = ExperimentResult(
        name=name or Path(config).stem, model=task.hparams.model,
        params=count_parameters(task), steps=cli.trainer.global_step,
        train_s=round(train_s, 1),
        latency_s=round(latency, 3), peak_memory_gb=peak_memory_gb,
        metrics={k: float(v) for k, v in final.items()}, curve=curve.points, run_dir=str(log_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "result.json", result.to_json())
    if rows:
        write_subject_csv(rows, run_dir / "subjects.csv", overwrite=True)
    return result


def _inference_latency(task, data) -> float:
    """Seconds for inference on the first validation batch (best of 2), as the task infers
    when deployed (its protocol's ``infer``: e.g. sliding windows over whole volumes)."""
    import torch

    batch = next(iter(data.val_dataloader()))
    batch = {k: v.to(task.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    times = []
    task.eval()
    with torch.no_grad():
        for _ in range(2):
            start = time.perf_counter()
            task.infer(batch)
            times.append(time.perf_counter() - start)
    return min(times)
