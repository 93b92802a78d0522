"""Functional connectomes as a datamodule: region time series → nilearn connectivity → batches.

:class:`ConnectomeDataModule` is the functional counterpart of
:class:`~cogimg.data.datamodules.VolumeDataModule`: subjects of a disease preset from
``participants.tsv``, a subject-level stratified k-fold split with a held-out test set (made
once, saved under ``<cache_dir>/splits/`` and reused, or read from ``split_file``), the leakage
check, and seeded loaders. Its inputs are the region time series of
:func:`cogimg.data.func.load_func_dataset` (``(T, R)`` per subject, confounds regressed,
cached there); its features are nilearn's :class:`~nilearn.connectome.ConnectivityMeasure`
(``correlation``, ``partial correlation`` or ``tangent``) **fitted on the fold's training
subjects only**: the tangent space's reference (the training subjects' geometric mean
covariance, ``measure.mean_``) never sees a validation or test subject, and every subject's
connectome is ``measure.transform`` of its own series.

Targets: a classification preset (``ad``, ``pd`` …) gives the class index of ``diagnosis``;
any other preset (``stroke``) is a regression of ``target`` (default ``NIHSS``), a numeric
``participants.tsv`` column. Motion-flagged subjects (``FuncDataset.motion``) stay in; they
are listed in :attr:`ConnectomeDataModule.flagged`, never silently dropped.

Batches: ``connectome`` float32 ``(B, E)`` (``output="vector"``, ``E = R (R - 1) / 2`` without
the diagonal, ``R (R + 1) / 2`` with it) or ``(B, R, R)`` (``output="matrix"``);
``label`` int64 ``(B,)`` (classification) or ``target`` float32 ``(B,)`` (regression);
``subject_id`` list of participant IDs (the key every task reads). With
``features="coupling"`` the ``connectome`` entry is instead each subject's per-region
structure–function coupling ``(B, R)`` (:func:`cogimg.data.coupling.subject_coupling`: its T1w regional intensity
profile against its own correlation connectome; nothing is fitted across subjects). The graph form for PyTorch
Geometric is :func:`top_k_edges` of each matrix (``connectome_gnn`` builds it per batch).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from cogimg.data.coupling import subject_coupling
from cogimg.data.participants import as_frame, listed, participants_hash, read_participants
from cogimg.data.splits import check_leakage, load_split, make_kfold_split, save_split
from cogimg.diseases import get_preset

KINDS = ("correlation", "partial correlation", "tangent")
OUTPUTS = ("vector", "matrix")
FEATURES = ("connectome", "coupling")
SUBSETS = ("train", "val", "test")


# --------------------------------------------------------------------------- connectivity
def fit_connectivity(series: Sequence[np.ndarray], kind: str = "tangent", vectorize: bool = True,
                     discard_diagonal: bool = True):
    """A nilearn ``ConnectivityMeasure`` fitted on ``series`` (each ``(T, R)``); the caller
    passes only training subjects. ``kind``: one of :data:`KINDS`."""
    from nilearn.connectome import ConnectivityMeasure

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; choose one of {list(KINDS)}")
    if not series:
        raise ValueError("no training time series to fit the connectivity measure on")
    measure = ConnectivityMeasure(kind=kind, vectorize=vectorize, discard_diagonal=discard_diagonal,
                                  standardize="zscore_sample")
    return measure.fit([np.asarray(s, dtype=np.float64) for s in series])


def top_k_edges(matrix: torch.Tensor, k: int | None = 8, threshold: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The graph form of a connectome ``(R, R)``: ``(edge_index (2, E) int64, weight (E,))``.

    Each node keeps its ``k`` strongest neighbours by ``|matrix|`` (self-loops excluded),
    symmetrised; or, with ``threshold``, every edge with ``|matrix| >= threshold``. The weight
    is the connectivity value of the edge. A batch ``(B, R, R)`` gives one graph of ``B · R``
    nodes (node ``b · R + i`` is region ``i`` of subject ``b``), as PyTorch Geometric batches.
    """
    batched = matrix.ndim == 3
    m = matrix if batched else matrix[None]
    if m.ndim != 3 or m.shape[1] != m.shape[2]:
        raise ValueError(f"expected a square connectome (R, R) or (B, R, R), got "
                         f"{tuple(matrix.shape)}")
    n = m.shape[1]
    strength = m.detach().abs().clone()
    eye = torch.eye(n, dtype=torch.bool, device=m.device).expand_as(strength)
    strength[eye] = -1.0
    if threshold is not None:
        keep = strength >= float(threshold)
    else:
        if k is None or k < 1:
            raise ValueError(f"top-k graph needs k ≥ 1 (or a threshold), got k={k}")
        idx = strength.topk(min(int(k), n - 1), dim=2).indices
        keep = torch.zeros_like(strength, dtype=torch.bool).scatter_(2, idx, True)
        keep = keep | keep.transpose(1, 2)
    keep = keep & ~eye
    b, i, j = keep.nonzero(as_tuple=True)
    edge_index = torch.stack([b * n + i, b * n + j])
    return edge_index, m[b, i, j]


# --------------------------------------------------------------------------- dataset
class _ConnectomeDataset(Dataset):
    def __init__(self, features: np.ndarray, ids: list[str], key: str, values: np.ndarray):
        self.features = torch.as_tensor(features, dtype=torch.float32)
        self.ids, self.key = ids, key
        dtype = torch.int64 if key == "label" else torch.float32
        self.values = torch.tensor(np.array(values), dtype=dtype)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"connectome": self.features[i], self.key: self.values[i], "subject_id": self.ids[i]}


class ConnectomeDataModule(L.LightningDataModule):
    """Connectomes of a disease preset's subjects, split at subject level (see module doc).

    Args:
        data_root: the BIDS tree (``participants.tsv``, func data and derivatives).
        preset: disease preset; classification presets classify ``diagnosis``, others
            (``stroke``) regress ``target``.
        kind: ``correlation``, ``partial correlation`` or ``tangent`` (nilearn).
        output: ``vector`` (upper triangle, ``(E,)``) or ``matrix`` (``(R, R)``).
        discard_diagonal: vectors without the diagonal (ignored for matrices).
        target: regression column of ``participants.tsv`` (default ``NIHSS``).
        split_file / fold / n_folds / test_fraction / seed: as the image datamodules.
        cache_dir: splits and the time-series cache; default ``<data_root>/derivatives/cogimg``.
        batch_size: subjects per batch.
        func_dataset: an already loaded :class:`cogimg.data.func.FuncDataset` (studies reuse one
            across arms; tests pass their own); ``None`` = ``load_func_dataset(data_root)``.
        modalities: the model's input channels: one, the connectome (what the config links give
            the model as ``in_channels`` and ``modalities``).
        features: ``connectome`` (the fitted connectivity measure) or ``coupling`` (per-region
            structure–function coupling ``(R,)`` from each subject's T1w and the parcellation
            beside the data; ``kind`` and ``output`` are then not used).
        parcellation: a :class:`cogimg.data.func.Parcellation` for ``coupling`` (default: the
            one ``cogimg synth --bold`` writes beside the data).
    """

    def __init__(self, data_root: str | Path, preset: str = "ad", kind: str = "tangent",
                 output: str = "vector", discard_diagonal: bool = True, target: str | None = None,
                 split_file: str | Path | None = None, fold: int = 0, n_folds: int = 5,
                 test_fraction: float = 0.2, cache_dir: str | Path | None = None,
                 batch_size: int = 16, seed: int = 0, func_dataset: Any = None,
                 modalities: tuple[str, ...] = ("connectome",), features: str = "connectome",
                 parcellation: Any = None) -> None:
        super().__init__()
        if features not in FEATURES:
            raise ValueError(f"features={features!r}; choose one of {list(FEATURES)}")
        self.feature_kind, self._parcellation = features, parcellation
        if tuple(modalities) != ("connectome",):
            raise ValueError(f"modalities={list(modalities)}: a connectome datamodule has one input, "
                             "['connectome']")
        self.modalities = ("connectome",)
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}; choose one of {list(KINDS)}")
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}; choose one of {list(OUTPUTS)}")
        self.data_root = Path(data_root)
        self.preset = get_preset(preset)
        self.task = "classification" if self.preset.task == "classification" else "regression"
        self.target = target or ("diagnosis" if self.task == "classification" else "NIHSS")
        self.kind, self.output, self.discard_diagonal = kind, output, discard_diagonal
        self.split_file = Path(split_file) if split_file is not None else None
        self.fold, self.n_folds, self.test_fraction, self.seed = fold, n_folds, test_fraction, seed
        self.cache_dir = Path(cache_dir) if cache_dir is not None else \
            self.data_root / "derivatives" / "cogimg"
        self.batch_size = batch_size
        self._func_dataset = func_dataset
        self.save_hyperparameters(ignore=["func_dataset", "parcellation"])
        self.subjects: dict[str, list[str]] = {}
        self.features: dict[str, np.ndarray] = {}
        self.values: dict[str, np.ndarray] = {}
        self.measure = None
        self.split_path: Path | None = None
        self.flagged: list[str] = []
        self.num_nodes = 0
        self.region_names: list[str] = []

    # ------------------------------------------------------------ preparation
    def setup(self, stage: str | None = None) -> None:
        if self.subjects:
            return
        dataset = self._func_dataset if self._func_dataset is not None else self._load_func()
        self.region_names = list(getattr(dataset, "region_names", []))
        table = self._participants(dataset)
        ids = self._fold_ids(table)
        series = dataset.series
        self.num_nodes = int(np.asarray(series[ids["train"][0]]).shape[1])
        if self.feature_kind == "connectome":
            self.measure = fit_connectivity([series[s] for s in ids["train"]], self.kind,
                                            vectorize=self.output == "vector",
                                            discard_diagonal=self.discard_diagonal)
        motion = getattr(dataset, "motion", None)
        if motion is not None and len(motion) and "flagged" in motion:
            self.flagged = sorted(str(s) for s in motion.loc[motion["flagged"].astype(bool),
                                                             "subject"] if s in set(table.index))
        by_id = table[self.target]
        for subset, members in ids.items():
            self.subjects[subset] = list(members)
            self.features[subset] = (
                self.connectomes([series[s] for s in members]) if self.feature_kind ==
                "connectome" else subject_coupling(self.data_root, members, series,
                                                   self._parcellation))
            raw = by_id.loc[list(members)]
            self.values[subset] = (np.array([self.preset.classes.index(v) for v in raw])
                                   if self.task == "classification"
                                   else raw.to_numpy(dtype=np.float64))

    def connectomes(self, series: Sequence[np.ndarray]) -> np.ndarray:
        """Connectomes of ``series`` under the fitted measure: ``(N, E)`` or ``(N, R, R)``."""
        if self.measure is None:
            raise RuntimeError("ConnectomeDataModule.setup() must run first")
        if not len(series):
            return np.zeros((0, *self.measure_shape), dtype=np.float32)
        return np.asarray(self.measure.transform([np.asarray(s, np.float64) for s in series]),
                          dtype=np.float32)

    @property
    def measure_shape(self) -> tuple[int, ...]:
        r = self.num_nodes
        if self.feature_kind == "coupling":
            return (r,)
        if self.output == "matrix":
            return (r, r)
        return (r * (r - 1) // 2 if self.discard_diagonal else r * (r + 1) // 2,)

    def _load_func(self):
        from cogimg.data.func import load_func_dataset

        return load_func_dataset(self.data_root, cache_dir=self.cache_dir / "func")

    def _participants(self, dataset) -> pd.DataFrame:
        """The preset's participants that have time series, indexed by ``participant_id``."""
        path = self.data_root / "participants.tsv"
        table = as_frame(read_participants(path)).set_index("participant_id")
        table = table[table["diagnosis"].isin(self.preset.diagnoses)]
        if self.target not in table.columns:
            raise ValueError(f"{path}: no column {self.target!r} (the {self.task} target of "
                             f"preset {self.preset.name!r}); columns: {list(table.columns)}")
        have = set(dataset.series)
        if lacking := sorted(set(table.index) - have):
            warnings.warn(f"{len(lacking)} participant(s) of preset {self.preset.name!r} have no "
                          f"functional time series and are not used: {listed(lacking)}",
                          UserWarning, stacklevel=3)
        table = table[table.index.isin(have)]
        if self.task == "regression":
            values = pd.to_numeric(table[self.target], errors="coerce")
            if missing := sorted(table.index[values.isna()]):
                raise ValueError(f"{path}: column {self.target!r} is missing or not numeric for "
                                 f"{listed(missing)}")
            table = table.assign(**{self.target: values})
        if table.empty:
            raise ValueError(f"{self.data_root}: no participant of preset {self.preset.name!r} "
                             f"(diagnoses {list(self.preset.diagnoses)}) has time series")
        return table.sort_index()

    def _fold_ids(self, table: pd.DataFrame) -> dict[str, list[str]]:
        frame = table.reset_index()
        stratify = "diagnosis" if self.task == "classification" else None
        if self.split_file is not None:
            split, self.split_path = load_split(self.split_file), self.split_file
        else:
            stem = f"connectome_{self.preset.name}_kfold{self.n_folds}_seed{self.seed}"
            digest = participants_hash(frame)[:8]
            self.split_path = self.cache_dir / "splits" / f"{stem}_{digest}.json"
            if self.split_path.exists():
                split = load_split(self.split_path)
            else:
                split = make_kfold_split(frame, n_folds=self.n_folds,
                                         test_fraction=self.test_fraction, stratify=stratify,
                                         seed=self.seed)
                try:
                    save_split(split, self.split_path)
                except FileExistsError:  # another process saved the same split meanwhile
                    split = load_split(self.split_path)
        check_leakage(split)
        ids = split.fold(self.fold)
        if unknown := sorted({i for members in ids.values() for i in members} - set(table.index)):
            raise ValueError(f"split {self.split_path} lists participant(s) without time series "
                             f"or outside preset {self.preset.name!r}: {listed(unknown)}")
        return {s: list(ids.get(s, [])) for s in SUBSETS}

    # ------------------------------------------------------------ what tasks ask
    def class_counts(self) -> dict[str, int]:
        """Training subjects per class (classification presets)."""
        self._require_setup()
        counts = np.bincount(self.values["train"].astype(int), minlength=len(self.preset.classes))
        return {c: int(n) for c, n in zip(self.preset.classes, counts)}

    def train_targets(self) -> np.ndarray:
        """Regression targets ``(N_train,)`` of the training subjects (target scaling)."""
        self._require_setup()
        return self.values["train"].astype(np.float64)

    def _require_setup(self) -> None:
        if not self.subjects:
            raise RuntimeError("ConnectomeDataModule.setup() must run before asking for data")

    # ------------------------------------------------------------ loaders
    def dataset(self, subset: str) -> _ConnectomeDataset:
        self._require_setup()
        key = "label" if self.task == "classification" else "target"
        return _ConnectomeDataset(self.features[subset], self.subjects[subset], key,
                                  self.values[subset])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("train"), batch_size=self.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), batch_size=self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def state_dict(self) -> dict:
        return {"preset": self.preset.name, "kind": self.kind, "output": self.output,
                "num_nodes": self.num_nodes}


def group_matrices(matrices: np.ndarray, groups: Sequence[str]) -> Mapping[str, np.ndarray]:
    """Mean connectome ``(R, R)`` of each group name in ``groups`` (one name per matrix)."""
    matrices, groups = np.asarray(matrices), np.asarray(groups)
    return {g: matrices[groups == g].mean(axis=0) for g in sorted(set(groups.tolist()))}


__all__ = ["FEATURES", "KINDS", "OUTPUTS", "ConnectomeDataModule", "fit_connectivity",
           "group_matrices", "top_k_edges"]
