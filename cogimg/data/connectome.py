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
structure–function coupling ``(B, R)`` (:func:`subject_coupling`: its T1w regional intensity
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


# --------------------------------------------------------------------------- structure–function
def regional_features(image: np.ndarray, labels: np.ndarray, indices: Sequence[int],
                      voxel_volume_mm3: float = 1.0) -> np.ndarray:
    """Per-region structural features of one subject: ``(R, 2)`` = (volume in mm³, mean
    intensity) of each label in ``indices`` (``image`` and ``labels`` on one grid ``(X, Y, Z)``;
    a label without voxels gives volume 0 and intensity ``nan``)."""
    image, labels = np.asarray(image, dtype=np.float64), np.asarray(labels)
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and label image {labels.shape} differ in grid")
    out = np.full((len(indices), 2), np.nan)
    for r, k in enumerate(indices):
        inside = labels == k
        out[r, 0] = inside.sum() * float(voxel_volume_mm3)
        if inside.any():
            out[r, 1] = image[inside].mean()
    return out


def structural_similarity(features: np.ndarray) -> np.ndarray:
    """A subject's structural (morphometric similarity) matrix ``(R, R)`` from ``(R, F)``
    regional features: each feature z-scored across regions; with ``F ≥ 2`` the Pearson
    correlation of two regions' feature vectors (Seidlitz et al. 2018), with ``F = 1`` minus
    the absolute difference of their z-scores. The diagonal is 1 (``F ≥ 2``) or 0."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"features must be (R ≥ 3 regions, F), got {x.shape}")
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    if z.shape[1] == 1:
        return -np.abs(z - z.T)
    return np.corrcoef(z)


def structure_function_coupling(structural: np.ndarray, functional: np.ndarray) -> np.ndarray:
    """Per-region structure–function coupling ``(R,)``: the Pearson correlation, over the other
    regions ``j ≠ i``, of region ``i``'s structural profile (row ``i`` of ``structural``) with
    its functional connectivity profile (row ``i`` of ``functional``); ``nan`` where either
    profile is constant. Both ``(R, R)`` for the same subject and regions."""
    s, f = np.asarray(structural, dtype=np.float64), np.asarray(functional, dtype=np.float64)
    if s.shape != f.shape or s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 3:
        raise ValueError(f"structural {s.shape} and functional {f.shape} must be the same "
                         "(R, R) with R ≥ 3")
    r = s.shape[0]
    off = ~np.eye(r, dtype=bool)
    a = s[off].reshape(r, r - 1)
    b = f[off].reshape(r, r - 1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def coupling_features(features: Sequence[np.ndarray], connectomes: Sequence[np.ndarray]
                      ) -> np.ndarray:
    """Structure–function coupling of every subject as features ``(N, R)``: subject ``n``'s
    regional features ``(R, F)`` (:func:`regional_features`) → :func:`structural_similarity`,
    coupled with its functional connectome ``(R, R)`` (e.g. a correlation matrix)."""
    if len(features) != len(connectomes):
        raise ValueError(f"{len(features)} subjects' structural features but "
                         f"{len(connectomes)} connectomes")
    return np.stack([structure_function_coupling(structural_similarity(x), c)
                     for x, c in zip(features, connectomes)]) if len(features) else np.zeros((0, 0))


def find_t1w(data_root: str | Path, subject: str) -> Path:
    """The subject's T1w image ``<data_root>/<subject>/[ses-*/]anat/<subject>*_T1w.nii[.gz]``
    (one expected; none or several is a ``ValueError`` naming the subject)."""
    base = Path(data_root) / subject
    found = sorted(p for pattern in ("anat/*_T1w.nii*", "ses-*/anat/*_T1w.nii*")
                   for p in base.glob(pattern))
    if len(found) != 1:
        raise ValueError(f"{base}: structure-function coupling needs one T1w image "
                         f"(anat/*_T1w.nii[.gz]) for {subject}, found {len(found)}")
    return found[0]


def subject_coupling(data_root: str | Path, subjects: Sequence[str],
                     series: Mapping[str, np.ndarray], parcellation: Any = None) -> np.ndarray:
    """Per-region structure–function coupling of each subject ``(N, R)`` float32.

    Structure: the subject's T1w mean intensity in each parcel (the parcellation resampled to
    the T1w grid, nearest neighbour; :func:`regional_features`) → :func:`structural_similarity`
    ``(R, R)``; function: the Pearson correlation of its region time series ``(T, R)``;
    coupled by :func:`structure_function_coupling`. Undefined values (an empty or constant
    parcel) are 0. ``parcellation``: a :class:`cogimg.data.func.Parcellation` (default: the
    one beside the data)."""
    import nibabel as nib
    from nilearn.image import resample_to_img

    from cogimg.data.func.bold import default_parcellation

    parc = parcellation if parcellation is not None else default_parcellation(data_root)
    atlas = parc.label_image()
    labels_on: dict[tuple, np.ndarray] = {}
    features, matrices = [], []
    for sid in subjects:
        t1 = nib.load(find_t1w(data_root, sid))
        key = (t1.shape[:3], np.round(t1.affine, 4).tobytes())
        if key not in labels_on:
            labels_on[key] = np.asarray(resample_to_img(
                atlas, t1, interpolation="nearest", force_resample=True,
                copy_header=True).dataobj).astype(np.int64)
        voxel = float(abs(np.linalg.det(t1.affine[:3, :3])))
        regional = regional_features(np.asarray(t1.dataobj), labels_on[key], parc.indices, voxel)
        features.append(regional[:, 1:])  # mean intensity (volumes are the atlas's, not the
        # subject's, on a template grid)
        x = np.asarray(series[sid], dtype=np.float64)
        matrices.append(np.corrcoef(x.T))
    if not features:
        return np.zeros((0, len(parc.indices)), dtype=np.float32)
    return np.nan_to_num(coupling_features(features, matrices), nan=0.0).astype(np.float32)


def group_matrices(matrices: np.ndarray, groups: Sequence[str]) -> Mapping[str, np.ndarray]:
    """Mean connectome ``(R, R)`` of each group name in ``groups`` (one name per matrix)."""
    matrices, groups = np.asarray(matrices), np.asarray(groups)
    return {g: matrices[groups == g].mean(axis=0) for g in sorted(set(groups.tolist()))}


__all__ = ["FEATURES", "KINDS", "OUTPUTS", "ConnectomeDataModule", "coupling_features",
           "find_t1w", "fit_connectivity", "group_matrices", "regional_features",
           "structural_similarity", "structure_function_coupling", "subject_coupling",
           "top_k_edges"]
