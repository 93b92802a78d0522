"""Checkpoint-and-requeue on a signal, for SLURM preemption and wall-time limits.

``sbatch --signal=SIGUSR1@90`` sends SIGUSR1 to every task 90 s before the job's time limit.
:class:`Preemption` (``cogimg fit`` always adds it) catches the signal, and at the end of the
training batch in progress — on every rank at the same batch: the ranks agree through one
collective per batch; after an epoch's last batch it waits for the next epoch's first, the
epoch's own validation and ``last.ckpt`` coming in between — writes the run's ``last.ckpt``, asks SLURM to requeue the job
(``scontrol requeue $SLURM_JOB_ID``, only when the job has an id and ``scontrol`` exists) and
stops the process with exit code 1 and a one-line message. The run's manifest says
``interrupted (Preempted: …)``. The requeued job runs the same script, which resumes with
``--ckpt_path <run>/checkpoints/last.ckpt``: the same run directory and W&B run continue, and
training continues exactly where it stopped (the task saves the random states, the datamodule
its queues' and samplers', Lightning the loop position — :mod:`cogimg.data.resumable`).

Lightning's own SLURM handler (``SLURMEnvironment(auto_requeue=True)``) saves
``hpc_ckpt_<n>.ckpt`` from inside the signal handler — at any point of a training step,
whose optimizer update may be half done — and keeps training until SLURM kills the job. This
callback replaces it while training runs (from ``on_train_start`` to ``teardown``); a signal
during the sanity check or setup still reaches Lightning's.

Without SLURM, ``kill -USR1 <pid>`` exercises the same path (no requeue): the process writes
``last.ckpt`` and exits; resume it by hand with ``--ckpt_path``.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint

log = logging.getLogger(__name__)


class Preempted(SystemExit):
    """Raised (exit code 1, one line on stderr) after the checkpoint is written."""


class Preemption(Callback):
    """Checkpoint at the next batch end after ``signum`` arrives, requeue on SLURM, stop.

    Args:
        signum: the signal (name such as ``"SIGUSR1"`` or number); SLURM's
            ``--signal=SIGUSR1@90`` sends it.
    """

    def __init__(self, signum: int | str = "SIGUSR1") -> None:
        self.signum = signal.Signals[signum] if isinstance(signum, str) else signal.Signals(signum)
        self.requested = False
        self._previous = None

    # ------------------------------------------------------------ the signal
    def _handle(self, signum, frame) -> None:
        self.requested = True  # acted on at the next batch end, never inside a step

    def on_train_start(self, trainer, pl_module) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.signum, self._handle)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(self.signum, self._previous)
        self._previous = None

    # ------------------------------------------------------------ acting on it
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Not after an epoch's last batch (its validation and epoch-end checkpoint come next):
        # a signal from there on is acted on after the next epoch's first batch.
        last = batch_idx + 1 >= trainer.num_training_batches
        if self._agreed(trainer) and not last:
            self._preempt(trainer)

    def _agreed(self, trainer) -> bool:
        """Whether any rank got the signal (every rank calls this at the same point)."""
        if trainer.world_size > 1:
            return bool(trainer.strategy.reduce_boolean_decision(self.requested, all=False))
        return self.requested

    def _preempt(self, trainer) -> None:
        path = checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        requeued = requeue() if trainer.is_global_zero else None
        where = "; SLURM requeues the job" if requeued else ""
        raise Preempted(f"cogimg: {self.signum.name}: checkpoint saved to {path}{where}; "
                        f"resume with --ckpt_path {path}")


def checkpoint_path(trainer) -> Path:
    """The run's ``last.ckpt`` (the checkpoint callback's folder), else
    ``<default_root_dir>/last.ckpt``."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    return Path(trainer.default_root_dir) / "last.ckpt"


def requeue() -> bool:
    """``scontrol requeue`` this SLURM job (array jobs: ``<array id>_<task id>``); ``False``
    outside SLURM or when ``scontrol`` is missing or fails."""
    job = os.environ.get("SLURM_JOB_ID")
    if array := os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    scontrol = shutil.which("scontrol")
    if not job or scontrol is None:
        return False
    done = subprocess.run([scontrol, "requeue", job], check=False, capture_output=True,
                          encoding="utf-8", errors="replace")
    if done.returncode:
        log.warning("scontrol requeue %s failed (%d): %s", job, done.returncode, done.stderr.strip())
    return done.returncode == 0
