"""A site as a Flower client: any cogimg task trained on one site's datamodule.

Flower builds a new client for every message (in a deployment each message even runs in a new
``flwr-clientapp`` process), so :class:`SiteClient` keeps nothing itself: what must last from
round to round lives in the node's ``Context.state`` —

- ``model``: the whole local state dict after the last message (FedBN/SiloBN's local batch-norm
  entries, which the server never sees);
- ``stream``: the states of the training loader's random generators, so that R rounds of one
  local epoch draw the subject order and augmentation of one R-epoch fit, not the first epoch's
  draws R times over.

A fit loads the server's shared entries (:func:`~.strategies.shared_keys` under the config's
``keep-local``), trains ``local-epochs`` with a Lightning ``Trainer`` (adding FedProx's proximal
gradient when the config has ``proximal_mu > 0``) and returns the shared entries, the number of
training subjects and aggregate scalars (``train_loss``, ``site``). An evaluation loads the
shared entries and returns the task's validation metrics (its ``summarise`` of the per-subject
rows, which never leave the site). With ``model_out`` the client also writes the model it
evaluated — the global shared weights with its own local entries — to that file (site-local
disk), e.g. to score the site's test subjects after the run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from flwr.app import ArrayRecord, Context
from flwr.client import NumPyClient
from lightning.pytorch.callbacks import Callback

from cogimg.paradigms.federated.strategies import shared_keys

MODEL, STREAM = "model", "stream"


class ProximalTerm(Callback):
    """FedProx: adds ``μ (w − w_global)`` — the gradient of ``μ/2 ‖w − w_global‖²`` — to each
    trainable shared parameter's gradient after every backward pass."""

    def __init__(self, mu: float, keys: list[str]) -> None:
        self.mu, self.keys = float(mu), set(keys)
        self.anchor: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.anchor = {n: p.detach().clone() for n, p in pl_module.named_parameters()
                       if p.requires_grad and n in self.keys}

    def on_after_backward(self, trainer, pl_module) -> None:
        for name, p in pl_module.named_parameters():
            if name in self.anchor and p.grad is not None:
                p.grad.add_(p.detach() - self.anchor[name], alpha=self.mu)


def get_weights(module: torch.nn.Module, keys: list[str]) -> list[np.ndarray]:
    """State-dict entries ``keys`` as numpy arrays (copies)."""
    state = module.state_dict()
    return [state[k].detach().cpu().numpy().copy() for k in keys]


def set_weights(module: torch.nn.Module, keys: list[str], arrays: list[np.ndarray]) -> None:
    """Load ``arrays`` into state-dict entries ``keys`` (others untouched); integer entries
    (``num_batches_tracked``), which FedAvg returns as floats, are rounded."""
    if len(arrays) != len(keys):
        raise ValueError(f"got {len(arrays)} weight arrays for {len(keys)} shared entries; "
                         "do server and client run the same model and strategy?")
    state = module.state_dict()
    for key, array in zip(keys, arrays):
        target = state[key]
        if tuple(target.shape) != tuple(np.shape(array)):
            raise ValueError(f"weight {key!r}: server sent shape {np.shape(array)}, model has "
                             f"{tuple(target.shape)}")
        value = torch.as_tensor(np.asarray(array))
        if not target.is_floating_point():
            value = value.round()
        target.copy_(value.to(target.dtype))


def loader_generators(loader: Any) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects a training loader draws from (its own, its
    sampler's and its dataset's — e.g. a patch queue's), in a fixed order."""
    found: list[torch.Generator] = []
    stack, seen = [loader], set()
    while stack:
        obj = stack.pop(0)
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            found.append(obj)
            continue
        for name in ("generator", "patch_generator", "sampler", "batch_sampler", "dataset",
                     "subject_sampler", "iterables"):
            child = getattr(obj, name, None)
            if isinstance(child, dict):
                stack.extend(child[k] for k in sorted(child))
            elif child is not None and not isinstance(child, (str, int, float)):
                stack.append(child)
    return found


class SiteClient(NumPyClient):
    """One site's Flower client (built anew for every message; see the module docstring).

    Args:
        site: the site's name (reported with every update).
        task_factory: builds the task module (same architecture everywhere).
        datamodule: the site's datamodule (its own train/val/test subjects only), set up.
        context: the node's Flower ``Context`` (its ``state`` persists between messages).
        seed: seeds the initial model (the server's, for every client) and each round's fit.
        trainer_kwargs: extra ``lightning.Trainer`` arguments (e.g. ``limit_train_batches``).
        model_out: write the evaluated model's state dict here (``torch.save``), or ``None``.
    """

    def __init__(self, site: str, task_factory: Callable[[], L.LightningModule], datamodule: Any,
                 context: Context, seed: int = 0, trainer_kwargs: dict | None = None,
                 model_out: str | Path | None = None) -> None:
        self.site, self.datamodule, self.context = str(site), datamodule, context
        self.seed, self.trainer_kwargs = int(seed), dict(trainer_kwargs or {})
        self.model_out = Path(model_out) if model_out else None
        L.seed_everything(self.seed, verbose=False)  # the same initial model as the server's
        self.task = task_factory()
        if MODEL in context.state:
            self.task.load_state_dict(context.state[MODEL].to_torch_state_dict())

    # ------------------------------------------------------------------ helpers
    def _load(self, parameters: list[np.ndarray], config: dict) -> list[str]:
        keys = shared_keys(self.task, str(config.get("keep-local", "")))
        set_weights(self.task, keys, list(parameters))
        return keys

    def _trainer(self, **kwargs) -> L.Trainer:
        args = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False,
                "num_sanity_val_steps": 0, **self.trainer_kwargs, **kwargs}
        return L.Trainer(**args)

    def _train_loader(self):
        """A fresh training loader whose generators continue where the last round's stopped."""
        loader = type(self.datamodule).train_dataloader(self.datamodule)
        generators = loader_generators(loader)
        if STREAM in self.context.state:
            saved = self.context.state[STREAM].to_numpy_ndarrays()
            if len(saved) != len(generators):
                raise RuntimeError(f"site {self.site}: {len(saved)} saved generator states for "
                                   f"{len(generators)} generators in the training loader")
            for g, s in zip(generators, saved):
                g.set_state(torch.from_numpy(s))
        return loader, generators

    # ------------------------------------------------------------------ Flower API
    def get_parameters(self, config) -> list[np.ndarray]:
        return get_weights(self.task, shared_keys(self.task, str(config.get("keep-local", ""))))

    def fit(self, parameters, config):
        keys = self._load(parameters, config)
        mu = float(config.get("proximal_mu", 0.0))
        epochs = int(config.get("local-epochs", 1))
        loader, generators = self._train_loader()
        # Each round's global RNG (dropout …) differs, the same for a given seed and round.
        L.seed_everything(self.seed * 100_003 + int(config.get("server-round", 0)), verbose=False)
        trainer = self._trainer(max_epochs=epochs, limit_val_batches=0,
                                callbacks=[ProximalTerm(mu, keys)] if mu > 0 else [])
        self.datamodule.train_dataloader = lambda: loader  # this round's, continuing the stream
        trainer.fit(self.task, datamodule=self.datamodule)
        self.context.state[MODEL] = ArrayRecord(self.task.state_dict())
        self.context.state[STREAM] = ArrayRecord([g.get_state().numpy() for g in generators])
        loss = trainer.callback_metrics.get("train/loss")
        metrics = {"site": self.site, **({"train_loss": float(loss)} if loss is not None else {})}
        return get_weights(self.task, keys), len(self.datamodule.subjects["train"]), metrics

    def evaluate(self, parameters, config):
        self._load(parameters, config)
        result = self._trainer().validate(self.task, datamodule=self.datamodule, verbose=False)[0]
        metrics = {k.split("/", 1)[1]: float(v) for k, v in result.items() if k.startswith("val/")}
        if self.model_out is not None:
            self.model_out.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.task.state_dict(), self.model_out)
        loss = metrics.get("loss", float("nan"))
        return float(loss), len(self.datamodule.subjects["val"]), {"site": self.site, **metrics}
