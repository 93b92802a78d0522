"""What a checkpoint needs so that training resumed from it continues exactly as if it had
never stopped: the global random states and the position of the training loaders.

- :func:`rng_states` / :func:`set_rng_states`: torch (CPU and CUDA), NumPy and Python
  ``random`` states, stored as tensors and plain values (readable with ``weights_only=True``).
- :func:`per_rank` / :func:`this_rank`: under DDP every process has its own states; they are
  gathered into a list indexed by rank when a checkpoint is written (on every rank), and each
  process takes its own when it is read.
- :class:`ResumableLoader`: a ``DataLoader`` that resumes mid-epoch. It counts the batches it
  has handed out in the current pass (its ``state_dict``); after ``load_state_dict`` its next
  pass starts at that batch, through its *source* — the dataset or the sampler that has
  ``resume_at(items)`` (:class:`~cogimg.data.streams.PatchStream`,
  :class:`~cogimg.data.sampling.SeededSampler`), whose own random state is restored first. The
  datamodules save and restore both (Lightning's own restoring of loader states is skipped
  when ``trainer.estimated_stepping_batches`` built the loader before the checkpoint was
  read, as a step-based learning-rate schedule does); Lightning also saves the position in
  its fit-loop state and, where it restores it, restores the same value.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader


# --------------------------------------------------------------------------- random states
def rng_states() -> dict[str, Any]:
    """The global random states: ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors,
    only where CUDA is initialised), ``numpy`` and ``python`` (tensors and plain values)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    python = state["python"]
    random.setstate((python["version"], tuple(int(v) for v in python["internal"].tolist()),
                     python["gauss_next"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# --------------------------------------------------------------------------- ranks
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def per_rank(state: Any) -> list[Any]:
    """``[state of rank 0, state of rank 1, …]`` (a collective under DDP: every rank calls it
    with its own ``state``); ``[state]`` in one process."""
    if not _distributed():
        return [state]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, state)
    return gathered


def this_rank(states: list[Any] | None, what: str = "state") -> Any | None:
    """This process's entry of :func:`per_rank`'s list; ``None`` (with a warning) when the
    checkpoint was written by a different number of processes."""
    if not states:
        return None
    world, rank = (dist.get_world_size(), dist.get_rank()) if _distributed() else (1, 0)
    if len(states) != world:
        warnings.warn(f"the checkpoint holds the {what} of {len(states)} process(es), this run has "
                      f"{world}: not restored, so training does not continue exactly", stacklevel=2)
        return None
    return states[rank]


# --------------------------------------------------------------------------- loaders
class ResumableLoader(DataLoader):
    """A ``DataLoader`` whose position in the current pass Lightning saves and restores (same
    arguments as ``DataLoader``).

    ``state_dict()`` → ``{"batches": batches handed out in the current pass}``;
    ``load_state_dict`` makes the next pass start at that batch, through :attr:`source`'s
    ``resume_at(batches × batch_size)``. A complete pass (``batches == len(self)``) restarts
    from its first batch, as the next epoch does.
    """

    _batches = 0

    @property
    def source(self):
        """The dataset or sampler that can resume at an item (``resume_at``), else ``None``."""
        for candidate in (self.dataset, self.sampler):
            if hasattr(candidate, "resume_at"):
                return candidate
        return None

    def __iter__(self):
        self._batches = 0
        return _Counting(super().__iter__(), self)

    def state_dict(self) -> dict[str, int]:
        return {"batches": int(self._batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        batches = int(state.get("batches", 0))
        if not 0 < batches < len(self):
            return  # at a pass boundary: the next pass starts from its beginning
        if self.source is None:
            warnings.warn(f"{type(self).__name__}: neither its dataset nor its sampler can resume "
                          "mid-pass; the pass restarts from its first batch", stacklevel=2)
            return
        self.source.resume_at(batches * int(self.batch_size or 1))


class _Counting:
    """An iterator over ``iterator`` that counts what it hands out on ``loader._batches``."""

    def __init__(self, iterator, loader: ResumableLoader) -> None:
        self.iterator, self.loader = iterator, loader

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.iterator)
        self.loader._batches += 1
        return batch

    def __len__(self) -> int:
        return len(self.iterator)
