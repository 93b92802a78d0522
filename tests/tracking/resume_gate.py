"""A test callback that holds a training process at a chosen batch until the test lets it go,
so that a signal sent by the test lands at a known point however fast training runs."""

from __future__ import annotations

import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback


class Gate(Callback):
    """After batch ``batch`` of epoch ``epoch``: write ``<folder>/waiting``, then wait (at most
    ``timeout_s``) until ``<folder>/go`` exists. Touches neither random state nor data."""

    def __init__(self, folder: str, epoch: int = 1, batch: int = 0, timeout_s: float = 300.0):
        self.folder, self.epoch, self.batch, self.timeout_s = Path(folder), epoch, batch, timeout_s

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if (trainer.current_epoch, batch_idx) != (self.epoch, self.batch):
            return
        go = self.folder / "go"
        if go.exists():
            return
        (self.folder / "waiting").touch()
        deadline = time.monotonic() + self.timeout_s
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
