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

The stroke lesion map as the structure (``structure="lesion"``, a regression preset such as
``stroke``): no image datamodule; each subject's binary lesion mask
(``derivatives/<lesion_derivative>/sub-*/…_msk.nii.gz``, read and checked by
:func:`cogimg.data.outcome.read_lesion_stack`, one grid for all) becomes ``image``
``(B, 1, X', Y', Z')`` float32 lesioned fraction of each ``lesion_downsample``³ block, and the
connectome datamodule's ``target`` (e.g. NIHSS) ``(B,)`` is the label. A split subject without a
mask is an error naming it.

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
from torch.utils.data import DataLoader, Dataset

from cogimg.data.connectome import ConnectomeDataModule
from cogimg.data.datamodules import VolumeDataModule
from cogimg.diseases import get_preset

SUBSETS = ("train", "val", "test")
STRUCTURES = ("image", "lesion")


class _LesionDataset(Dataset):
    """One subject per item: ``image`` ``(1, X', Y', Z')`` lesion fraction, ``availability``
    ``(1,)``, ``target`` score and ``subject_id`` (the connectome is joined by the collate)."""

    def __init__(self, maps: np.ndarray, ids: list[str], targets: np.ndarray) -> None:
        self.maps = torch.as_tensor(maps, dtype=torch.float32)
        self.ids, self.targets = ids, torch.tensor(np.array(targets), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.maps[i][None], "availability": torch.ones(1),
                "target": self.targets[i], "subject_id": self.ids[i]}


def _stack(items: list[dict]) -> dict:
    return {k: [x[k] for x in items] if k == "subject_id" else torch.stack([x[k] for x in items])
            for k in items[0]}


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
        structure: ``image`` (the ``modalities`` volumes, classification presets) or
            ``lesion`` (the lesion mask, regression presets such as ``stroke``; see module doc).
        lesion_derivative / lesion_downsample: where the masks are (``derivatives/<name>``)
            and the block size (voxels per axis) of the lesion-fraction map.
        target: the regression column of ``participants.tsv`` (default ``NIHSS``).
        func_dataset: a loaded :class:`cogimg.data.func.FuncDataset` (tests, studies).
    """

    def __init__(self, data_root: str | Path, preset: str = "ad",
                 modalities: list[str] | None = None, spacing_mm: float = 4.0,
                 target_shape: tuple[int, int, int] = (48, 56, 48),
                 connectivity: str = "tangent", connectome_output: str = "vector",
                 split_file: str | Path | None = None, fold: int = 0, n_folds: int = 5,
                 test_fraction: float = 0.2, cache_dir: str | Path | None = None,
                 batch_size: int = 8, augmentation: str = "light", seed: int = 0,
                 withhold_connectome: float = 0.0, structure: str = "image",
                 lesion_derivative: str = "lesions", lesion_downsample: int = 2,
                 target: str | None = None, func_dataset: Any = None) -> None:
        super().__init__()
        if not 0.0 <= withhold_connectome <= 1.0:
            raise ValueError(f"withhold_connectome must be in [0, 1], got {withhold_connectome}")
        if structure not in STRUCTURES:
            raise ValueError(f"structure={structure!r}; choose one of {list(STRUCTURES)}")
        if structure == "lesion" and get_preset(preset).task == "classification":
            raise ValueError(f"structure='lesion' regresses a score; preset {preset!r} is a "
                             "classification preset (use a regression preset such as 'stroke')")
        self.structure = structure
        self.lesion_derivative, self.lesion_downsample = lesion_derivative, int(lesion_downsample)
        self.data_root, self.batch_size = Path(data_root), batch_size
        self.lesions: dict[str, np.ndarray] = {}
        self.image = None if structure == "lesion" else VolumeDataModule(
            data_root, preset=preset, split_file=None, fold=fold, cache_dir=cache_dir,
            spacing_mm=spacing_mm, target_shape=tuple(target_shape),
            modalities=list(modalities or ["T1w"]), tabular=[], batch_size=batch_size,
            augmentation=augmentation, n_folds=n_folds, test_fraction=test_fraction, seed=seed)
        self.split_file = Path(split_file) if split_file is not None else None
        self.connectome_args = {"data_root": data_root, "preset": preset, "kind": connectivity,
                                "output": connectome_output, "fold": fold, "n_folds": n_folds,
                                "test_fraction": test_fraction, "cache_dir": cache_dir,
                                "batch_size": batch_size, "seed": seed, "target": target,
                                "func_dataset": func_dataset}
        self.withhold_connectome, self.seed = float(withhold_connectome), seed
        self.save_hyperparameters(ignore=["func_dataset"])
        self.connectome: ConnectomeDataModule | None = None
        self.withheld: frozenset[str] = frozenset()
        self._lookup: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------ what tasks ask
    @property
    def preset(self):
        if self.image is None:
            return get_preset(self.connectome_args["preset"])
        return self.image.preset

    @property
    def modalities(self) -> tuple[str, ...]:
        return ("lesion",) if self.image is None else self.image.modalities

    @property
    def config(self):
        return None if self.image is None else self.image.config

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
        if self.image is None:
            shape = next(iter(self.lesions.values())).shape if self.lesions else ()
            return {"modalities": ["lesion"], "input_shape": list(shape)}
        return {"modalities": list(self.image.modalities),
                "input_shape": list(self.image.config.target_shape)}

    def class_counts(self) -> dict[str, int]:
        return self.image.class_counts() if self.image is not None else \
            self.connectome.class_counts()

    def train_targets(self) -> np.ndarray:
        """Regression targets ``(N_train,)`` of the training subjects (target scaling)."""
        return self.connectome.train_targets()

    # ------------------------------------------------------------ preparation
    def setup(self, stage: str | None = None) -> None:
        if self.connectome is not None:
            if self.image is not None:
                self.image.setup(stage)
            return
        self.connectome = ConnectomeDataModule(split_file=self.split_file, **self.connectome_args)
        self.connectome.setup(stage)
        if self.image is None:
            self._read_lesions()
        else:
            self._setup_images(stage)
        test = sorted(self.connectome.subjects["test"])
        n = round(self.withhold_connectome * len(test))
        rng = np.random.default_rng(self.seed)
        self.withheld = frozenset(rng.choice(test, size=n, replace=False).tolist()) if n else \
            frozenset()

    def _read_lesions(self) -> None:
        """Each split subject's lesion-fraction map ``(X', Y', Z')`` and connectome."""
        from cogimg.data.outcome import find_bids_masks, read_lesion_stack
        from cogimg.data.participants import listed

        masks = find_bids_masks(self.data_root, self.lesion_derivative)
        ids = [s for subset in SUBSETS for s in self.connectome.subjects[subset]]
        if missing := sorted(set(ids) - set(masks)):
            raise ValueError(f"{self.data_root / 'derivatives' / self.lesion_derivative}: no "
                             f"lesion mask (*_msk.nii.gz) for split subject(s) {listed(missing)}")
        stack = read_lesion_stack([masks[s] for s in ids], ids, self.data_root,
                                  downsample=self.lesion_downsample)
        fraction = stack["maps"].astype(np.float32) / float(self.lesion_downsample ** 3)
        self.lesions = dict(zip(ids, fraction))
        for subset in SUBSETS:
            for sid, row in zip(self.connectome.subjects[subset],
                                self.connectome.features[subset]):
                self._lookup[sid] = torch.as_tensor(row, dtype=torch.float32)

    def _setup_images(self, stage: str | None) -> None:
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

    def _lesion_loader(self, subset: str, shuffle: bool = False) -> DataLoader:
        ids = self.connectome.subjects[subset]
        data = _LesionDataset(np.stack([self.lesions[s] for s in ids]) if ids else
                              np.zeros((0, 1, 1, 1)), ids, self.connectome.values[subset])
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(data, batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=_stack)

    def _join(self, loader, withheld: frozenset[str] = frozenset()):
        loader.collate_fn = JoinConnectome(loader.collate_fn, self._lookup, withheld)
        return loader

    def train_dataloader(self):
        if self.image is None:
            return self._join(self._lesion_loader("train", shuffle=True))
        return self._join(self.image.train_dataloader())

    def val_dataloader(self):
        if self.image is None:
            return self._join(self._lesion_loader("val"))
        return self._join(self.image.val_dataloader())

    def test_dataloader(self):
        if self.image is None:
            return self._join(self._lesion_loader("test"), self.withheld)
        return self._join(self.image.test_dataloader(), self.withheld)

    def predict_dataloader(self):
        return self.test_dataloader()

    def state_dict(self) -> dict:
        image = self.image.state_dict() if self.image is not None else \
            {"structure": "lesion", "lesion_downsample": self.lesion_downsample}
        return {**image,
                **({"connectome": self.connectome.state_dict()} if self.connectome else {})}

    def load_state_dict(self, state: dict) -> None:
        if self.image is not None:
            self.image.load_state_dict({k: v for k, v in state.items() if k != "connectome"})


__all__ = ["JoinConnectome", "StructureFunctionDataModule"]
