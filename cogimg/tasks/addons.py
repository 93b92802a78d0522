"""Training add-ons: what a paradigm adds to any task's training step, through the task protocol.

A task takes ``addons: [...]`` (YAML: a list of ``class_path``/``init_args`` entries, built by
jsonargparse; Python: instances). Each add-on is a :class:`TrainingAddon` and may

- ask the datamodule for extra training streams (:attr:`TrainingAddon.streams`: required,
  :attr:`TrainingAddon.optional_streams`: used when the datamodule offers them). The
  datamodule then serves ``{"labelled": batch, <stream>: batch, …}`` through one Lightning
  ``CombinedLoader`` whose epoch is the labelled loader's (the other streams cycle);
- add samples to the task's own forward pass and capture the input of a module of the
  network during it (:meth:`TrainingAddon.before_forward`);
- add a loss term (:meth:`TrainingAddon.training_loss`), with values to log.

Add-ons compose: every one sees the same :class:`TrainingStep`, and the task's loss is the
supervised loss plus every add-on's term. The paradigms (``cogimg.paradigms``) subclass
:class:`TrainingAddon`; this module, and so every task, imports none of them.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from cogimg.data.streams import LABELLED


class TrainingAddon(nn.Module):
    """Base of every training add-on (an ``nn.Module``: its parameters train with the task's
    and are saved in its checkpoints).

    Subclasses set :attr:`name` (used in logged keys) and the streams they use, and override
    the hooks they need. ``config()`` returns the keyword arguments that rebuild the add-on
    (saved in the task's hyperparameters as ``{class_path, init_args}``).
    """

    name: ClassVar[str] = "addon"
    streams: ClassVar[tuple[str, ...]] = ()
    optional_streams: ClassVar[tuple[str, ...]] = ()

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this add-on."""
        raise NotImplementedError

    def stream_batch_size(self, stream: str) -> int | None:
        """Batch size of ``stream`` (``None`` = the datamodule's)."""
        return None

    def setup(self, task, datamodule, stage: str) -> None:
        """Called when the task's network exists (Lightning's ``configure_model``), with the
        task, its datamodule (``None`` without one) and the stage (``fit``, ``validate`` …);
        builds the add-on's own modules so that checkpoints load into them."""

    def before_forward(self, step: TrainingStep) -> None:
        """Add samples to the task's forward pass (:meth:`TrainingStep.add_samples`) or ask to
        capture a module's input during it (:meth:`TrainingStep.capture`)."""

    def training_loss(self, step: TrainingStep) -> tuple[torch.Tensor, dict[str, float]] | None:
        """``(loss term, values to log)`` — the term is added to the task's loss as it is — or
        ``None`` for an add-on without a loss (e.g. one that only initialises weights)."""
        return None

    def to_hparams(self) -> dict[str, Any]:
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": self.config()}


def build_addons(entries: Sequence[TrainingAddon | Mapping[str, Any]] | None) -> list[TrainingAddon]:
    """Add-ons from instances or ``{class_path, init_args}`` mappings (a checkpoint's or a
    YAML's); a class path must name a :class:`TrainingAddon` subclass inside ``cogimg``."""
    built = []
    for i, entry in enumerate(entries or ()):
        if isinstance(entry, TrainingAddon):
            built.append(entry)
            continue
        if not isinstance(entry, Mapping) or "class_path" not in entry:
            raise ValueError(f"addons[{i}]: expected a TrainingAddon or a mapping with class_path, "
                             f"got {entry!r}")
        path = str(entry["class_path"])
        module_name, _, class_name = path.rpartition(".")
        if not module_name.startswith("cogimg."):
            raise ValueError(f"addons[{i}].class_path {path!r}: only cogimg add-ons are loaded")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            raise ValueError(f"addons[{i}].class_path {path!r} does not exist") from None
        if not (isinstance(cls, type) and issubclass(cls, TrainingAddon)):
            raise TypeError(f"addons[{i}].class_path {path!r} is not a TrainingAddon")
        built.append(cls(**dict(entry.get("init_args") or {})))
    names = [a.name for a in built]
    if duplicated := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"addons: {duplicated} given more than once")
    return built


class TrainingStep:
    """One training step's batches, shared by the task and its add-ons.

    Attributes:
        task: the task (its protocol: ``logits``, ``loss``, ``log`` …).
        labelled: the labelled batch (``image``, ``label`` …).
        streams: the other streams' batches of this step, by name.
        output: the task's network output on the labelled samples (after :meth:`forward`).
        forward_batch: the batch of that forward pass (labelled samples first, then the
            samples add-ons added).
        forward_output: the output on ``forward_batch`` (``output`` is its first rows).
        captured: input of every captured module during the forward pass, by module name.
    """

    def __init__(self, task, batch: Mapping[str, Any]) -> None:
        self.task = task
        if LABELLED in batch:
            self.labelled = batch[LABELLED]
            self.streams = {k: v for k, v in batch.items() if k != LABELLED}
        else:
            self.labelled, self.streams = batch, {}
        self._extra: list[Mapping[str, Any]] = []
        self._capture: list[str] = []
        self.captured: dict[str, torch.Tensor] = {}
        self.output: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Number of labelled samples ``B``."""
        first = next(v for v in self.labelled.values() if torch.is_tensor(v))
        return int(first.shape[0])

    def add_samples(self, batch: Mapping[str, Any]) -> None:
        """Run ``batch``'s samples (without labels) in the same forward pass as the labelled."""
        self._extra.append(batch)

    def capture(self, module_name: str) -> None:
        """Record the input of ``module_name`` (inside ``task.model``) during the forward pass."""
        if module_name not in self._capture:
            self._capture.append(module_name)

    def forward(self) -> torch.Tensor:
        """The task's forward pass on the labelled samples plus the added ones; returns the
        labelled rows of the output."""
        batch = self.labelled
        for extra in self._extra:
            batch = merge_batches(batch, extra)
        model = self.task.model
        with contextlib.ExitStack() as stack:
            stores = {name: stack.enter_context(captured_input(model.get_submodule(name)))
                      for name in self._capture}
            output = self.task.logits(batch)
        for name, store in stores.items():
            if "features" not in store:
                raise RuntimeError(f"module {name!r} was not called in the forward pass; "
                                   "name a module the model uses")
            self.captured[name] = store["features"]
        self.forward_batch, self.forward_output = batch, output
        self.output = output[: self.size]
        return self.output


@contextlib.contextmanager
def captured_input(module: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Inside the block, ``store["features"]`` is the last input of ``module``, ``(B, D)`` or
    ``(B, D, *S)``."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, args):
        store["features"] = args[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def merge_batches(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """``first``'s and ``second``'s samples in one batch (tensors concatenated along dim 0,
    lists joined); keys ``second`` lacks (its ``label``) are kept from ``first`` only."""
    merged: dict[str, Any] = {}
    for key, value in first.items():
        if key not in second:
            merged[key] = value
        elif torch.is_tensor(value):
            merged[key] = torch.cat([value, second[key].to(value.device)])
        elif isinstance(value, list):
            merged[key] = [*value, *second[key]]
        else:
            merged[key] = value
    return merged


def training_progress(task) -> float:
    """Share of the fit's optimizer steps done, in [0, 1] (1 without a trainer)."""
    trainer = task._trainer
    if trainer is None:
        return 1.0
    total = max(1, int(trainer.estimated_stepping_batches))
    return min(1.0, task.global_step / total)
