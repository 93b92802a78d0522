"""Structure and function of the same subjects on one split: T1w volumes + connectomes.

:class:`StructureFunctionDataModule` composes the image classification datamodule
(:class:`~cogimg.data.datamodules.VolumeDataModule`) and
:class:`~cogimg.data.connectome.ConnectomeDataModule`: the connectome datamodule makes (or
reads) the subject-level split — the same file the connectome-only experiments use, so
structure, function and fusion arms of a study share one split — and the image datamodule is
given that split file, so both see the same train / val / test subjects (the connectivity
measure is fitted on the training subjects only, as always). Each image batch is joined with
its subjects' connectomes.

Batches: everything the image datamodule yields (``image`` ``(B, M, X, Y, Z)``,
``availability`` ``(B, M)``, ``label`` ``(B,)``, ``subject_id`` …) plus ``connectome``
``(B, E)`` or ``(B, R, R)``, ``connectome_available`` ``(B,)`` float (0 = withheld), and
``structure_function``: the dict ``{image, availability, connectome, connectome_available}``
that :class:`~cogimg.models.connectome.StructureFunctionFusion` reads (the tasks'
``input_key: structure_function``).

Missing function at test time: ``withhold_connectome`` (a fraction of the test subjects, drawn
with ``seed``) get a zero connectome and ``connectome_available`` 0, as a subject without
fMRI would; the fusion model then predicts from the image branch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from cogimg.data.connectome import ConnectomeDataModule
from cogimg.data.datamodules import VolumeDataModule

SUBSETS = ("train", "val", "test")


class JoinConnectome:
    """A collate function: the image collate's batch plus its subjects' connectomes."""

    def __init__(self, inner, lookup: dict[str, torch.Tensor], withheld: frozenset[str]) -> None:
        self.inner, self.lookup, self.withheld = inner, lookup, withheld

    def __call__(self, items):
        batch = self.inner(items)
        ids = [str(s) for s in batch["subject_id"]]
        if missing := [s for s in ids if s not in self.lookup]:
            raise KeyError(f"no connectome for subject(s) {missing} of the image batch")
        present = torch.tensor([0.0 if s in self.withheld else 1.0 for s in ids])
        conn = torch.stack([self.lookup[s] for s in ids]) * present.view(-1, *[1] * (
            self.lookup[ids[0]].ndim))
        batch["connectome"], batch["connectome_available"] = conn, present
        batch["structure_function"] = {"image": batch["image"],
                                       "availability": batch.get("availability"),
                                       "connectome": conn, "connectome_available": present}
        return batch


class StructureFunctionDataModule(L.LightningDataModule):
    """T1w volumes and functional connectomes of a classification preset, on one split.

    Args:
        data_root, preset, split_file, fold, n_folds, test_fraction, seed, cache_dir,
            batch_size: as both datamodules (the split is the connectome datamodule's).
        modalities: image channels (default ``["T1w"]``); spacing_mm, target_shape,
            augmentation: the image datamodule's.
        connectivity: ``correlation``, ``partial correlation`` or ``tangent``;
            connectome_output: ``vector`` or ``matrix`` (the connectome encoder's input).
        withhold_connectome: fraction of test subjects whose connectome is withheld (0–1).
        func_dataset: a loaded :class:`cogimg.data.func.FuncDataset` (tests, studies).
    """

    def __init__(self, data_root: str | Path, preset: str = "ad",
                 modalities: list[str] | None = None, spacing_mm: float = 4.0,
                 target_shape: tuple[int, int, int] = (48, 56, 48),
                 connectivity: str = "tangent", connectome_output: str = "vector",
                 split_file: str | Path | None = None, fold: int = 0, n_folds: int = 5,
                 test_fraction: float = 0.2, cache_dir: str | Path | None = None,
                 batch_size: int = 8, augmentation: str = "light", seed: int = 0,
                 withhold_connectome: float = 0.0, func_dataset: Any = None) -> None:
        super().__init__()
        if not 0.0 <= withhold_connectome <= 1.0:
            raise ValueError(f"withhold_connectome must be in [0, 1], got {withhold_connectome}")
        self.image = VolumeDataModule(
            data_root, preset=preset, split_file=None, fold=fold, cache_dir=cache_dir,
            spacing_mm=spacing_mm, target_shape=tuple(target_shape),
            modalities=list(modalities or ["T1w"]), tabular=[], batch_size=batch_size,
            augmentation=augmentation, n_folds=n_folds, test_fraction=test_fraction, seed=seed)
        self.split_file = Path(split_file) if split_file is not None else None
        self.connectome_args = {"data_root": data_root, "preset": preset, "kind": connectivity,
                                "output": connectome_output, "fold": fold, "n_folds": n_folds,
                                "test_fraction": test_fraction, "cache_dir": cache_dir,
                                "batch_size": batch_size, "seed": seed,
                                "func_dataset": func_dataset}
        self.withhold_connectome, self.seed = float(withhold_connectome), seed
        self.save_hyperparameters(ignore=["func_dataset"])
        self.connectome: ConnectomeDataModule | None = None
        self.withheld: frozenset[str] = frozenset()
        self._lookup: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------ what tasks ask
    @property
    def preset(self):
        return self.image.preset

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.image.modalities

    @property
    def config(self):
        return self.image.config

    @property
    def num_nodes(self) -> int:
        return self.connectome.num_nodes if self.connectome is not None else 0

    @property
    def subjects(self) -> dict[str, list[str]]:
        return self.connectome.subjects if self.connectome is not None else {}

    @property
    def split_path(self) -> Path | None:
        return self.connectome.split_path if self.connectome is not None else None

    def model_defaults(self) -> dict[str, Any]:
        """What a structure–function model takes from the data: image channels and shape."""
        return {"modalities": list(self.image.modalities),
                "input_shape": list(self.image.config.target_shape)}

    def class_counts(self) -> dict[str, int]:
        return self.image.class_counts()

    # ------------------------------------------------------------ preparation
    def setup(self, stage: str | None = None) -> None:
        if self.connectome is not None:
            self.image.setup(stage)
            return
        self.connectome = ConnectomeDataModule(split_file=self.split_file, **self.connectome_args)
        self.connectome.setup(stage)
        # one split: the connectome datamodule's file (made once, or split_file), for the images
        self.image.split_file = Path(self.connectome.split_path)
        self.image.setup(stage)
        image_ids = {s: sorted(str(x["subject_id"]) for x in self.image.subjects.get(s, []))
                     for s in SUBSETS}
        for subset in SUBSETS:
            if image_ids[subset] != sorted(self.connectome.subjects[subset]):
                raise ValueError(f"split {self.image.split_path}: the {subset} subjects with "
                                 "volumes and those with time series differ")
            for sid, row in zip(self.connectome.subjects[subset],
                                self.connectome.features[subset]):
                self._lookup[sid] = torch.as_tensor(row, dtype=torch.float32)
        test = sorted(self.connectome.subjects["test"])
        n = round(self.withhold_connectome * len(test))
        rng = np.random.default_rng(self.seed)
        self.withheld = frozenset(rng.choice(test, size=n, replace=False).tolist()) if n else \
            frozenset()

    def _join(self, loader, withheld: frozenset[str] = frozenset()):
        loader.collate_fn = JoinConnectome(loader.collate_fn, self._lookup, withheld)
        return loader

    def train_dataloader(self):
        return self._join(self.image.train_dataloader())

    def val_dataloader(self):
        return self._join(self.image.val_dataloader())

    def test_dataloader(self):
        return self._join(self.image.test_dataloader(), self.withheld)

    def predict_dataloader(self):
        return self.test_dataloader()

    def state_dict(self) -> dict:
        return {**self.image.state_dict(),
                **({"connectome": self.connectome.state_dict()} if self.connectome else {})}

    def load_state_dict(self, state: dict) -> None:
        self.image.load_state_dict({k: v for k, v in state.items() if k != "connectome"})


__all__ = ["JoinConnectome", "StructureFunctionDataModule"]
