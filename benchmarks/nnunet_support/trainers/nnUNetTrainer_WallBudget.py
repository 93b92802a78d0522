"""nnU-Net v2 trainer that trains for a wall-clock budget (imported by nnU-Net, not by cogimg).

Found by ``nnUNetv2_train … -tr nnUNetTrainer_WallBudget`` when ``nnUNet_extTrainer`` points at
this folder. Everything that makes nnU-Net nnU-Net is kept (its planned patch and batch size,
network, deep supervision, Dice+CE loss, foreground oversampling, augmentation, SGD with
Nesterov momentum and the poly learning-rate schedule); only the length of training changes:

* ``COGIMG_NNUNET_BUDGET_S`` (seconds, required): training stops at the first iteration
  after the budget (from the end of ``on_train_start``: the same point where
  cogimg's Lightning ``max_time`` starts counting, after data set-up).
* The poly schedule ``lr = initial_lr · (1 − t)^0.9`` follows the elapsed fraction of the
  budget ``t`` instead of ``epoch / 1000`` (nnU-Net's 1000-epoch schedule would still be at
  its peak when a short budget stops it; cogimg's arm anneals by wall time the same way).
* Epochs are short (``COGIMG_NNUNET_ITERS`` training iterations, default 10, and
  ``COGIMG_NNUNET_VAL_ITERS`` validation iterations, default 2), and an epoch that reaches
  the budget ends at that iteration, so training overshoots the budget by about one
  iteration (plus the epoch's validation iterations).
* ``COGIMG_NNUNET_THREADS`` torch threads (nnU-Net sets all cores on CPU).
* The full-volume validation after training is skipped unless ``COGIMG_NNUNET_FINAL_VAL=1``:
  the benchmark predicts the held-out subjects itself with ``nnUNetv2_predict``.

``budget.json`` in the fold's output folder records the epochs, iterations and seconds used.
"""

from __future__ import annotations

import json
import os
import time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

_CUDA = torch.device("cuda")  # nnU-Net's default device argument (-device picks the real one)


class nnUNetTrainer_WallBudget(nnUNetTrainer):
    # nnU-Net records its trainers' __init__ arguments by name: keep the signature explicit.
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget_s = float(os.environ["COGIMG_NNUNET_BUDGET_S"])
        self.num_iterations_per_epoch = int(os.environ.get("COGIMG_NNUNET_ITERS", "10"))
        self.num_val_iterations_per_epoch = int(os.environ.get("COGIMG_NNUNET_VAL_ITERS", "2"))
        self.num_epochs = 10**6  # never reached: the budget ends training
        if "COGIMG_NNUNET_THREADS" in os.environ:
            torch.set_num_threads(int(os.environ["COGIMG_NNUNET_THREADS"]))
        self._budget_start = None

    def _elapsed_fraction(self) -> float:
        return min((time.perf_counter() - self._budget_start) / self.budget_s, 1.0)

    def on_train_start(self):
        super().on_train_start()  # builds network, optimizer, poly scheduler, data loaders
        self.lr_scheduler = _TimePoly(self)
        self._budget_start = time.perf_counter()

    def run_training(self):
        self.on_train_start()
        iterations = 0
        while self.current_epoch < self.num_epochs and self._elapsed_fraction() < 1.0:
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                if outputs and self._elapsed_fraction() >= 1.0:
                    break  # the budget ends mid-epoch: stop at the iteration
                outputs.append(self.train_step(next(self.dataloader_train)))
            iterations += len(outputs)
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val = [self.validation_step(next(self.dataloader_val))
                       for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val)
            self.on_epoch_end()
        train_s = time.perf_counter() - self._budget_start
        self.on_train_end()
        if self.local_rank == 0:
            record = {"budget_s": self.budget_s, "train_s": round(train_s, 1),
                      "epochs": self.current_epoch, "iterations": iterations,
                      "patch_size": list(self.configuration_manager.patch_size),
                      "batch_size": int(self.batch_size),
                      "threads": torch.get_num_threads()}
            with open(os.path.join(self.output_folder, "budget.json"), "w") as f:
                json.dump(record, f, indent=2)

    def perform_actual_validation(self, *args, **kwargs):
        if os.environ.get("COGIMG_NNUNET_FINAL_VAL") == "1":
            return super().perform_actual_validation(*args, **kwargs)
        return None


class _TimePoly:
    """Stands in for nnU-Net's PolyLRScheduler: ``step(epoch)`` (called by
    ``on_train_epoch_start``) sets ``initial_lr · (1 − elapsed / budget)^0.9``."""

    def __init__(self, trainer: nnUNetTrainer_WallBudget) -> None:
        self.trainer = trainer

    def step(self, current_step=None) -> None:
        t = self.trainer
        lr = t.initial_lr * (1 - min(t._elapsed_fraction(), 0.999)) ** 0.9
        for group in t.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state) -> None:
        pass
