"""A site as a federated client: it holds its own datamodule and trains a task locally.

:class:`SiteClient` is the only object that touches a site's data. It keeps one task
module for the whole run (so FedBN's local batch-norm layers persist between rounds),
loads the server's shared weights, trains ``local_epochs`` with a Lightning ``Trainer``
(adding FedProx's proximal gradient when ``proximal_mu > 0``; one training loader for all
rounds, so the data stream continues like one long fit) and returns a
:class:`~.messages.ClientUpdate`: weights, its number of training subjects and aggregate
metrics. The same object serves the in-process simulation and Flower's ``NumPyClient``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from cogimg.paradigms.federated.messages import ClientEvaluation, ClientUpdate, GlobalModel
from cogimg.paradigms.federated.strategies import Strategy


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
    """Load ``arrays`` into state-dict entries ``keys`` (others untouched)."""
    if len(arrays) != len(keys):
        raise ValueError(f"got {len(arrays)} weight arrays for {len(keys)} shared entries; "
                         "do server and client use the same model and strategy?")
    state = module.state_dict()
    for key, array in zip(keys, arrays):
        if tuple(state[key].shape) != tuple(array.shape):
            raise ValueError(f"weight {key!r}: server sent shape {array.shape}, model has "
                             f"{tuple(state[key].shape)}")
        state[key].copy_(torch.as_tensor(array, dtype=state[key].dtype))


class SiteClient:
    """One site's client.

    Args:
        name: the site (client id).
        task_factory: builds the task module (same architecture on every client).
        datamodule: this site's datamodule (its train/val/test subjects only).
        strategy: decides which weights are shared.
        local_epochs: epochs of local training per round.
        trainer_kwargs: extra ``lightning.Trainer`` arguments (e.g. ``limit_train_batches``).
        seed: seeds the local model's initialisation.
    """

    def __init__(self, name: str, task_factory: Callable[[], L.LightningModule], datamodule: Any,
                 strategy: Strategy, local_epochs: int = 1, trainer_kwargs: dict | None = None,
                 seed: int = 0) -> None:
        if local_epochs < 1:
            raise ValueError(f"local_epochs must be ≥ 1, got {local_epochs}")
        self.name, self.datamodule, self.strategy = str(name), datamodule, strategy
        self.local_epochs = int(local_epochs)
        self.trainer_kwargs = dict(trainer_kwargs or {})
        L.seed_everything(seed, verbose=False)
        self.task = task_factory()
        self.datamodule.prepare_data()
        self.datamodule.setup("fit")
        # Prepared once here; Lightning would re-run prepare_data (re-read the BIDS tree and
        # re-check the cache) at every round's fit.
        self.datamodule.prepare_data = lambda: None
        # One training loader for the whole run, as one long fit has: its seeded generator
        # then moves on from round to round (new subject order and augmentation draws each
        # local epoch). A fresh ``train_dataloader()`` per round's fit restarts the generator
        # and replays the first epoch's batches, augmentation included, every round.
        make_loader, loaders = self.datamodule.train_dataloader, []

        def train_dataloader():
            if not loaders:
                loaders.append(make_loader())
            return loaders[0]

        self.datamodule.train_dataloader = train_dataloader
        self.keys = strategy.shared_keys(self.task)

    def get_parameters(self) -> list[np.ndarray]:
        """Current shared weights (the server may start from one client's initial model)."""
        return get_weights(self.task, self.keys)

    def _trainer(self, **kwargs) -> L.Trainer:
        args = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False,
                "num_sanity_val_steps": 0, **self.trainer_kwargs, **kwargs}
        return L.Trainer(**args)

    def fit(self, model: GlobalModel) -> ClientUpdate:
        """Load the global weights, train locally, return the update."""
        set_weights(self.task, self.keys, model.parameters)
        mu = float(model.config.get("proximal_mu", 0.0))
        callbacks = [ProximalTerm(mu, self.keys)] if mu > 0 else []
        trainer = self._trainer(max_epochs=self.local_epochs, limit_val_batches=0, callbacks=callbacks)
        trainer.fit(self.task, datamodule=self.datamodule)
        loss = trainer.callback_metrics.get("train/loss")
        metrics = {"train_loss": float(loss)} if loss is not None else {}
        return ClientUpdate(self.name, self.get_parameters(), len(self.datamodule.subjects["train"]),
                            metrics)

    def evaluate(self, model: GlobalModel | None = None, subset: str = "val") -> ClientEvaluation:
        """Aggregate metrics of ``model`` (``None`` = the local model as it is) on ``subset``."""
        if model is not None:
            set_weights(self.task, self.keys, model.parameters)
        trainer = self._trainer()
        run = trainer.validate if subset == "val" else trainer.test
        result = run(self.task, datamodule=self.datamodule, verbose=False)[0]
        metrics = {k.split("/", 1)[1]: float(v) for k, v in result.items() if k.startswith(f"{subset}/")}
        return ClientEvaluation(self.name, len(self.datamodule.subjects[subset]), metrics)
