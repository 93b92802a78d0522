"""Training streams: how a datamodule hands out the labelled batches and the extra streams that
training add-ons ask for (unlabelled images, a held-out site's images), one epoch at a time.

- :data:`LABELLED`: the labelled batch's key when a training batch holds several streams;
- :class:`Cycled`: an extra stream that restarts when exhausted (the labelled one sets the epoch);
- :func:`distributed_subjects`: under DDP, this rank's share of the subjects;
- :class:`PatchStream`: a patch queue's epoch as an iterable that Lightning does not re-shard;
- :class:`TrainingStreams`: a datamodule's training loaders of one epoch, combined into what
  ``train_dataloader`` returns, and their exact-resume state (saved in every checkpoint).
"""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

from cogimg.data.resumable import ResumableLoader, per_rank, this_rank
from cogimg.data.sampling import SeededQueue

#: Key of the labelled batch when a training batch holds several streams.
LABELLED = "labelled"


class Cycled:
    """An endless iterable over ``loader``, started anew each time it is exhausted (no
    ``len``: inside a ``min_size`` ``CombinedLoader`` the labelled loader sets the epoch)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader

    def state_dict(self) -> dict:
        """The wrapped loader's position (``{}`` when it has none to save)."""
        return self.loader.state_dict() if hasattr(self.loader, "state_dict") else {}

    def load_state_dict(self, state: dict) -> None:
        if hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(state)

    def __iter__(self):
        while True:
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
            if empty:
                raise ValueError("a training stream is empty (no subject or no patch)")


def distributed_subjects(n: int, seed: int) -> DistributedSampler | None:
    """Under DDP, this rank's share of ``n`` subjects, reshuffled every epoch from ``seed``
    (each subject on exactly one rank per epoch when ``n`` divides by the world size);
    ``None`` in one process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return DistributedSampler(range(n), num_replicas=dist.get_world_size(), rank=dist.get_rank(),
                              shuffle=True, seed=seed)


class PatchStream(IterableDataset):
    """A queue's patches of one epoch, in the order it hands them out. An iterable, so that
    Lightning does not shard the patches again under DDP: the queue already loads only this
    rank's subjects (:func:`distributed_subjects`).

    Resumable: ``state_dict``/``load_state_dict`` are the queue's (its random state and place
    in its stream of patches); :meth:`resume_at` makes the next epoch hand out only the
    patches that an epoch interrupted after ``items`` patches had left."""

    def __init__(self, queue: SeededQueue) -> None:
        self.queue = queue
        self._start = 0

    def __len__(self) -> int:
        return len(self.queue)

    def __iter__(self):
        start, self._start = self._start, 0
        return (self.queue[i] for i in range(start, len(self.queue)))

    def state_dict(self) -> dict:
        return self.queue.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.queue.load_state_dict(state)

    def resume_at(self, items: int) -> None:
        self._start = int(items)


class TrainingStreams:
    """A datamodule's training loaders: the labelled one and the extra streams its task asked
    for, combined into what ``train_dataloader`` returns, and their exact-resume state.

    :meth:`state` (stored in every checkpoint) holds, per process (a list indexed by rank;
    gathered, so every rank must call it, as Lightning does), for each resumable stream the
    random state of its queue or sampler (``state``) and, mid-epoch, the batches it has handed
    out in this epoch (``batches``; 0 at an epoch end, where every stream starts a new pass).
    :meth:`load` keeps such a state until :meth:`combine` restores it into the next epoch's
    loaders, so that the rest of an interrupted epoch and the epochs after it draw what they
    would have drawn."""

    def __init__(self) -> None:
        self.loaders: dict[str, ResumableLoader] = {}  # this epoch's resumable streams
        self._loaded: list[dict] | None = None  # per rank, from a checkpoint

    def combine(self, loaders: dict[str, DataLoader]):
        """``loaders`` (``LABELLED`` and any extra streams, by name) with a loaded state
        restored: the labelled loader alone, or one ``min_size`` ``CombinedLoader`` whose epoch
        is the labelled loader's and whose other streams cycle."""
        self.loaders = {name: loader for name, loader in loaders.items()
                        if isinstance(loader, ResumableLoader) and loader.source is not None}
        states = this_rank(self._loaded, "training-stream state") or {}
        self._loaded = None
        for name, state in states.items():
            if name not in self.loaders:
                raise ValueError(f"the checkpoint holds the state of training stream {name!r}, which "
                                 f"this run does not have (it has {sorted(self.loaders)})")
            self.loaders[name].source.load_state_dict(state["state"])
            # Mid-epoch: the next pass is the rest of the interrupted one.
            self.loaders[name].load_state_dict({"batches": state["batches"]})
        if len(loaders) == 1:
            return loaders[LABELLED]
        streams = {name: Cycled(loader) for name, loader in loaders.items() if name != LABELLED}
        return CombinedLoader({LABELLED: loaders[LABELLED], **streams}, mode="min_size")

    def state(self, epoch_batches: int | None) -> list[dict] | None:
        """The checkpoint's ``training_streams`` (class docstring); ``None`` before the first
        epoch. ``epoch_batches``: the labelled batches of an epoch (the trainer's
        ``num_training_batches``; ``None``: the labelled loader's length)."""
        if not self.loaders:
            return None
        labelled = self.loaders.get(LABELLED)
        done = labelled.state_dict()["batches"] if labelled is not None else 0
        if not isinstance(epoch_batches, int) and labelled is not None:
            epoch_batches = len(labelled)
        mid_epoch = 0 < done < (epoch_batches or 0)
        return per_rank({name: {"state": loader.source.state_dict(),
                                "batches": loader.state_dict()["batches"] if mid_epoch else 0}
                         for name, loader in self.loaders.items()})

    def load(self, states: list[dict] | None) -> None:
        """Keep a checkpoint's ``training_streams`` for the next :meth:`combine`."""
        self._loaded = states
