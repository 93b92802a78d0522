"""Training streams: how a datamodule hands out the labelled batches and the extra streams that
training add-ons ask for (unlabelled images, a held-out site's images), one epoch at a time.

- :data:`LABELLED`: the labelled batch's key when a training batch holds several streams;
- :class:`Cycled`: an extra stream that restarts when exhausted (the labelled one sets the epoch);
- :func:`distributed_subjects`: under DDP, this rank's share of the subjects;
- :class:`PatchStream`: a patch queue's epoch as an iterable that Lightning does not re-shard.
"""

from __future__ import annotations

import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset

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
