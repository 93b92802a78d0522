"""A callback for the DDP test: writes the subject IDs each rank trains on, one file per rank."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Callback


class TrainingSubjects(Callback):
    """``OUT/rank<r>_epoch<e>.json``: the distinct ``subject_id`` of every training batch that
    rank ``r`` saw in epoch ``e``."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.seen: set[str] = set()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.update(str(s) for s in batch["subject_id"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / f"rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(sorted(self.seen)), encoding="utf-8")
