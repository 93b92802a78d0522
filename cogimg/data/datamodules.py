"""LightningDataModules driven by a disease preset: dataset + split + cache + transforms.

- :class:`PatchDataModule` (segmentation, detection): a ``tio.Queue`` of label-weighted
  patches for training; whole preprocessed volumes (batch 1) for validation and test, for
  sliding-window inference by the task.
- :class:`VolumeDataModule` (classification): whole volumes cropped/padded to a fixed shape,
  the class index from the preset, standardised tabular features and a per-modality
  availability mask.

Both load the BIDS tree with :func:`cogimg.data.bids.load_dataset`, take subjects from a
split file (when none is given, a k-fold split is made once, saved under
``<cache_dir>/splits/`` and reused), preprocess every subject once into a
:class:`~cogimg.data.cache.VolumeCache` and afterwards read only the cache. They know
nothing about models.

Determinism: every random draw (subject order, patch locations, augmentation parameters)
comes from a ``torch.Generator`` seeded with ``seed`` — augmentation of each subject runs
under its own seed drawn from it — so batches are the same for any ``num_workers`` and do
not depend on (or change) the global RNG.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
import torchio as tio
from torch.utils.data import (
    DataLoader,
    RandomSampler,
    Sampler,
    SequentialSampler,
    WeightedRandomSampler,
)

from cogimg.data.bids import load_dataset
from cogimg.data.cache import VolumeCache, load_subject
from cogimg.data.splits import (
    check_leakage,
    load_split,
    make_kfold_split,
    participants_hash,
    save_split,
    sessions_table,
    subjects_for,
)
from cogimg.data.transforms import PreprocessingConfig, augmentation, fit_histogram_landmarks
from cogimg.diseases import get_preset

SUBSETS = ("train", "val", "test")


# --------------------------------------------------------------------------- seeding
def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


class SeededSampler(Sampler):
    """Wrap a sampler so it yields ``(index, seed)``; the seed comes from ``generator`` and
    makes the item's random transform reproducible whichever worker runs it."""

    def __init__(self, sampler: Sampler, generator: torch.Generator):
        self.sampler, self.generator = sampler, generator

    def __iter__(self):
        for index in self.sampler:
            yield int(index), _draw_seed(self.generator)

    def __len__(self) -> int:
        return len(self.sampler)


class SeededSubjectsDataset(tio.SubjectsDataset):
    """``tio.SubjectsDataset`` of cached subjects whose ``dataset[(index, seed)]`` runs the
    transform under ``torch.manual_seed(seed)`` without touching the caller's global RNG."""

    def __init__(self, subjects: Sequence[tio.Subject], transform=None):
        super().__init__(subjects, transform=transform, load_getitem=False)

    def __getitem__(self, index):
        if not isinstance(index, tuple):
            return self._load_and_transform(index)
        index, seed = index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._load_and_transform(index)

    def _load_and_transform(self, index: int) -> tio.Subject:
        subject = load_subject(copy.deepcopy(self._subjects[index]))
        return self._transform(subject) if self._transform is not None else subject


class SeededQueue(tio.Queue):
    """``tio.Queue`` whose subject order, augmentation and patch sampling come from one seed.

    Subjects are shuffled by a generator-driven sampler and transformed under per-subject
    seeds (in the ``num_workers`` loader processes); patch locations and the patch shuffle
    are drawn in the main process under a seed drawn from the same generator at each refill.
    """

    def __init__(self, subjects_dataset: SeededSubjectsDataset, *args, seed: int = 0, **kwargs):
        # Two streams: worker prefetching consumes the subject stream ahead of time, so the
        # patch stream (main process) must not share its generator.
        self.generator = torch.Generator().manual_seed(seed)
        self.patch_generator = torch.Generator().manual_seed(seed + 1)
        super().__init__(subjects_dataset, *args, shuffle_subjects=False, **kwargs)

    def _get_subjects_iterable(self):
        order = RandomSampler(range(len(self.subjects_dataset)), generator=self.generator)
        loader = DataLoader(self.subjects_dataset, batch_size=1, num_workers=self.num_workers,
                            sampler=SeededSampler(order, self.generator),
                            collate_fn=self._get_first_item, generator=self.generator)
        self._num_sampled_subjects = 0
        return iter(loader)

    def _fill(self) -> None:
        # Patch cutting is many small tensor ops: intra-op threads only add contention with
        # the training step that runs in this process (measured in benchmarks/data_pipeline.py).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_draw_seed(self.patch_generator))
                super()._fill()
        finally:
            torch.set_num_threads(threads)


class LabelPatchSampler(tio.LabelSampler):
    """``tio.LabelSampler`` with the same patch-centre distribution, drawn cheaply.

    TorchIO builds a float64 probability map and its CDF over the whole volume for every
    subject, and cuts each patch by deep-copying the whole subject. At 2 mm a brain has
    ~1 M voxels per channel, so on cached data this cost more than loading the volume
    (benchmarks/data_pipeline.py). Here a label value is drawn with ``label_probabilities``
    (renormalised over the values present where a patch fits, as TorchIO does), then a
    centre uniformly among its voxels — by rejection for common values, from the voxel
    list for rare ones — and only the patch is copied. Multi-channel label maps and
    ``label_probabilities=None`` fall back to TorchIO's implementation.
    """

    #: Values covering at least this fraction of the region are drawn by rejection.
    REJECTION_FRACTION = 0.05

    def _generate_patches(self, subject: tio.Subject, num_patches: int | None = None):
        label = self.get_probability_map_image(subject).data
        if self.label_probabilities_dict is None or label.shape[0] != 1:
            yield from super()._generate_patches(subject, num_patches)
            return
        size = self.patch_size.astype(int)
        lo, hi = size // 2, np.array(label.shape[1:]) - (size - 1) // 2
        # Voxel (i, j, k) of the region is the centre of the patch starting at (i, j, k).
        region = label[0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        counts = {v: int((region == v).sum()) for v, p in self.label_probabilities_dict.items() if p > 0}
        present = [v for v, n in counts.items() if n]
        if not present:
            raise RuntimeError(f"subject {subject.get('subject_id')!r}: no voxel labelled "
                               f"{sorted(counts)} where a {tuple(size)} patch fits")
        weights = np.array([float(self.label_probabilities_dict[v]) for v in present])
        cumulative = np.cumsum(weights / weights.sum())
        voxels: dict[int, torch.Tensor] = {}
        left = num_patches
        while left is None or left > 0:
            draw = float(torch.rand(1))  # torch RNG: seeded per queue refill (SeededQueue)
            value = present[min(int(np.searchsorted(cumulative, draw, side="right")), len(present) - 1)]
            if counts[value] >= self.REJECTION_FRACTION * region.numel():
                ini = self._draw_by_rejection(region, value)
            else:
                if value not in voxels:
                    voxels[value] = torch.nonzero(region == value)
                ini = voxels[value][int(torch.randint(len(voxels[value]), (1,)))].tolist()
            yield self.extract_patch(subject, tuple(int(i) for i in ini))
            left = None if left is None else left - 1

    @staticmethod
    def _draw_by_rejection(region: torch.Tensor, value: int) -> list[int]:
        while True:  # the first accepted of i.i.d. uniform draws is uniform over the accepted
            idx = [torch.randint(n, (32,)) for n in region.shape]
            hits = torch.nonzero(region[idx[0], idx[1], idx[2]] == value)
            if len(hits):
                first = int(hits[0])
                return [int(i[first]) for i in idx]

    def crop(self, subject: tio.Subject, index_ini, patch_size) -> tio.Subject:
        """The patch at ``index_ini``: sliced tensors (copied), affine shifted, metadata copied."""
        ini = np.asarray(index_ini, dtype=int)
        fin = ini + np.asarray(patch_size, dtype=int)
        window = (slice(None), *(slice(a, b) for a, b in zip(ini.tolist(), fin.tolist())))
        items = {}
        for key, value in subject.items():
            if isinstance(value, tio.Image):
                affine = value.affine.copy()
                affine[:3, 3] += affine[:3, :3] @ ini
                items[key] = type(value)(tensor=value.data[window].clone(), affine=affine)
            else:
                items[key] = copy.deepcopy(value)
        patch = tio.Subject(items)
        patch[tio.LOCATION] = torch.as_tensor(ini.tolist() + fin.tolist())
        return patch


# --------------------------------------------------------------------------- batches
class SubjectCollate:
    """Stack ``tio.Subject`` samples into a batch dict (picklable, for worker processes).

    Batch keys: ``image`` (B, C, X, Y, Z) float32, channels = ``modalities`` in order, zeros
    for a missing modality; ``availability`` (B, C) float32, 1 where the modality exists;
    ``spacing_mm`` (B, 3) float64 voxel size in mm; ``subject_id`` (list of B str); ``cache_entry`` (list of B str, for
    :func:`~cogimg.data.cache.invert_to_native`); with ``label_key``: ``label`` (B, 1, X, Y, Z)
    int64; with ``class_key``: ``label`` (B,) int64; with ``tabular_key``: ``tabular`` (B, F)
    float32; patches also get ``location`` (B, 6) int64 (TorchIO's index_ini + index_fin).
    """

    def __init__(self, modalities: Sequence[str], label_key: str | None = None,
                 class_key: str | None = None, tabular_key: str | None = None):
        self.modalities = tuple(modalities)
        self.label_key, self.class_key, self.tabular_key = label_key, class_key, tabular_key

    def __call__(self, subjects: list[tio.Subject]) -> dict:
        images, available = [], []
        for subject in subjects:
            present = [subject[m].data.float() for m in self.modalities if m in subject]
            template = torch.zeros_like(present[0][:1])
            images.append(torch.cat([subject[m].data.float() if m in subject else template
                                     for m in self.modalities]))
            available.append([float(m in subject) for m in self.modalities])
        batch = {"image": torch.stack(images), "availability": torch.tensor(available),
                 "spacing_mm": torch.tensor([subject[self.modalities[0]].spacing
                                             if self.modalities[0] in subject else
                                             next(iter(subject.get_images(False))).spacing
                                             for subject in subjects], dtype=torch.float64),
                 "subject_id": [str(s["subject_id"]) for s in subjects],
                 "cache_entry": [str(s.get("cache_entry", "")) for s in subjects]}
        if self.label_key is not None:
            batch["label"] = torch.stack([s[self.label_key].data.long() for s in subjects])
        if self.class_key is not None:
            batch["label"] = torch.tensor([int(s[self.class_key]) for s in subjects])
        if self.tabular_key is not None:
            batch["tabular"] = torch.from_numpy(np.stack([s[self.tabular_key] for s in subjects]))
        if tio.LOCATION in subjects[0]:
            batch["location"] = torch.stack([torch.as_tensor(s[tio.LOCATION]) for s in subjects]).long()
        return batch


# --------------------------------------------------------------------------- tabular
class TabularEncoder:
    """Clinical columns → float32 features, standardised with TRAINING statistics only.

    Per column, in the given order: a numeric column gives ``<col>`` = (x − train mean) /
    train std (scikit-learn ``StandardScaler``, missing values left out of the fit) with
    missing values imputed as the train mean (0 after standardisation) and ``<col>_missing``
    (1 where missing). A text column gives one-hot ``<col>=<value>`` for the values seen in
    training (unseen or missing → all zeros) and ``<col>_missing``. Missing = NaN, ``n/a``
    or empty. The indicator columns are always present, so train/val/test have the same F.
    """

    def __init__(self, columns: Sequence[str]):
        self.columns = list(columns)

    @staticmethod
    def _missing(values: pd.Series) -> np.ndarray:
        return (values.isna() | values.astype(str).str.strip().isin(["n/a", ""])).to_numpy()

    def fit(self, table: pd.DataFrame) -> TabularEncoder:
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        self.encoders, self.feature_names = {}, []
        for col in self.columns:
            values, missing = table[col], self._missing(table[col])
            if pd.api.types.is_numeric_dtype(values):
                self.encoders[col] = StandardScaler().fit(values.to_numpy(float)[:, None])
                self.feature_names += [col, f"{col}_missing"]
            else:
                seen = sorted(set(values[~missing].astype(str)))
                self.encoders[col] = OneHotEncoder(categories=[seen], handle_unknown="ignore",
                                                   sparse_output=False).fit(np.array(seen, dtype=object)[:, None])
                self.feature_names += [f"{col}={v}" for v in seen] + [f"{col}_missing"]
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """``(N, F)`` float32 features of the rows of ``table``."""
        blocks = []
        for col in self.columns:
            encoder, values, missing = self.encoders[col], table[col], self._missing(table[col])
            if hasattr(encoder, "mean_"):
                x = encoder.transform(pd.to_numeric(values, errors="coerce").to_numpy(float)[:, None])
                blocks.append(np.nan_to_num(np.where(missing[:, None], 0.0, x)))
            else:
                text = np.where(missing, "", values.astype(str).to_numpy())[:, None].astype(object)
                blocks.append(encoder.transform(text) if encoder.categories_[0].size else
                              np.zeros((len(table), 0)))
            blocks.append(missing[:, None].astype(float))
        return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((len(table), 0), np.float32)


# --------------------------------------------------------------------------- base
def default_cache_dir(data_root: str | Path) -> Path:
    """``$COGIMG_CACHE`` (default ``~/.cache/cogimg``) / ``<dataset name>-<hash of its path>``."""
    root = Path(data_root).expanduser().resolve()
    base = Path(os.environ.get("COGIMG_CACHE", "~/.cache/cogimg")).expanduser()
    return base / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


class _CachedDataModule(L.LightningDataModule):
    """Shared by both datamodules: dataset, split, cache, seeded loaders."""

    def __init__(self, data_root, preset, modalities, split_file, fold, n_folds, test_fraction,
                 cache_dir, config: PreprocessingConfig, histogram_standardization, augmentation_,
                 num_workers, seed):
        super().__init__()
        self.data_root = Path(data_root)
        self.preset = get_preset(preset)
        self.modalities = tuple(modalities) if modalities is not None else self.preset.modalities
        self.required = tuple(m for m in self.modalities if m in self.preset.modalities)
        if not self.required:
            raise ValueError(f"modalities {list(self.modalities)} include none of preset "
                             f"{self.preset.name!r}'s required {list(self.preset.modalities)}")
        self.split_file = Path(split_file) if split_file is not None else None
        self.fold, self.n_folds, self.test_fraction = fold, n_folds, test_fraction
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(data_root)
        self.config = config
        self.histogram_standardization = histogram_standardization
        self.augmentation = augmentation_
        self.num_workers, self.seed = num_workers, seed
        self.subjects: dict[str, list[tio.Subject]] = {}
        self.split_path: Path | None = None

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Stored in every checkpoint: what ``cogimg predict`` needs to preprocess a new scan
        exactly as in training (preset, input modalities in channel order, preprocessing)."""
        return {"preset": self.preset.name, "modalities": list(self.modalities),
                "preprocessing": self.config.to_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        pass  # the datamodule is rebuilt from its config; nothing to restore

    # ------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Make/save the split and fill the cache (once, on the first process)."""
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if not self.subjects:
            self._prepare()

    def _prepare(self) -> None:
        dataset = load_dataset(self.data_root, required_modalities=self.required,
                               modalities=self.modalities, diagnoses=self.preset.diagnoses)
        if not dataset.subjects:
            raise ValueError(f"no subject of {self.data_root} has diagnosis in "
                             f"{list(self.preset.diagnoses)} and modalities {list(self.required)}")
        ids = self._fold_ids(dataset)
        raw = {s: subjects_for(dataset.subjects, ids[s]) for s in SUBSETS}
        if self.histogram_standardization:
            path = self.cache_dir / "landmarks" / f"{self._split_stem()}_fold{self.fold}.json"
            if not path.exists():
                fit_histogram_landmarks(raw["train"], self.modalities_present(raw["train"]), path)
            self.config = dataclasses.replace(self.config, histogram_landmarks=str(path))
        cache = VolumeCache(self.cache_dir / "volumes", self.config)
        everything = cache.warm([s for subset in SUBSETS for s in raw[subset]], workers=self.num_workers)
        by_id = {s["subject_id"]: s for s in everything}
        self.subjects = {subset: [by_id[s["subject_id"]] for s in raw[subset]] for subset in SUBSETS}
        self.cache = cache
        self._after_prepare()

    def modalities_present(self, subjects) -> list[str]:
        return [m for m in self.modalities if any(m in s for s in subjects)]

    def _split_stem(self) -> str:
        return (self.split_file.stem if self.split_file is not None else
                f"{self.preset.name}_kfold{self.n_folds}_seed{self.seed}")

    def _fold_ids(self, dataset) -> dict[str, list[str]]:
        if self.split_file is not None:
            split = load_split(self.split_file)
            self.split_path = self.split_file
        else:
            # The participants hash in the name: a changed dataset gets its own split file.
            digest = participants_hash(dataset.participants)[:8]
            self.split_path = self.cache_dir / "splits" / f"{self._split_stem()}_{digest}.json"
            if self.split_path.exists():
                split = load_split(self.split_path)
            else:
                split = make_kfold_split(dataset.participants, n_folds=self.n_folds,
                                         test_fraction=self.test_fraction, stratify="diagnosis",
                                         seed=self.seed)
                try:
                    save_split(split, self.split_path)
                except FileExistsError:  # another process saved the same split meanwhile
                    split = load_split(self.split_path)
        check_leakage(split, sessions_table(dataset.subjects))
        return split.fold(self.fold)

    def _after_prepare(self) -> None:
        """Subclasses: fit train-set statistics once the cached subjects are known."""

    # ------------------------------------------------------------ loaders
    def _generator(self, offset: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + offset)

    def _volume_loader(self, subset: str, collate: SubjectCollate, batch_size: int = 1) -> DataLoader:
        self._require_setup()
        dataset = SeededSubjectsDataset(self._select(self.subjects[subset]))
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                          sampler=SequentialSampler(dataset), collate_fn=collate,
                          generator=self._generator(3))  # DataLoader draws a worker seed from it

    def _require_setup(self) -> None:
        if not self.subjects:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for loaders")

    def _select(self, subjects: list[tio.Subject]) -> list[tio.Subject]:
        """Subjects reduced to the images the model reads (augmenting others would waste time)."""
        keep = set(self.modalities) | set(self._label_keys())
        return [tio.Subject({k: v for k, v in s.items() if not isinstance(v, tio.Image) or k in keep})
                for s in subjects]

    def _label_keys(self) -> tuple[str, ...]:
        return ()


# --------------------------------------------------------------------------- patches
class PatchDataModule(_CachedDataModule):
    """Patch-based training for segmentation and detection presets.

    Args:
        data_root: BIDS tree (see :mod:`cogimg.data.bids`).
        preset: disease preset name (:mod:`cogimg.diseases`); its modalities become the
            image channels in order and its first label key present in the dataset the label.
        split_file: JSON split (:mod:`cogimg.data.splits`); ``None`` = make a stratified
            ``n_folds``-fold split with a ``test_fraction`` held-out test set, saved under
            ``<cache_dir>/splits/`` and reused.
        fold: fold index of the split.
        cache_dir: cache folder; ``None`` = :func:`default_cache_dir`.
        spacing_mm: preprocessing spacing in mm; ``None`` = the preset's.
        patch_size: training patch size ``(X, Y, Z)`` in voxels.
        samples_per_volume: patches drawn from each (augmented) volume.
        queue_length: patches held by the queue (``tio.Queue`` max_length).
        batch_size: patches per training batch.
        num_workers: processes that load/augment subjects (and warm the cache).
        label_probabilities: probability that a patch centre falls on each label value
            (``tio.LabelSampler``): ``{0: 0.5, 1: 0.5}`` = half the patches centred on lesion.
        augmentation: strength of :func:`~cogimg.data.transforms.augmentation` for the task.
        normalization / crop_to_brain / histogram_standardization: see
            :func:`~cogimg.data.transforms.preprocessing` (landmarks fitted on the train fold).
        seed: seeds subject order, patch sampling and augmentation.

    Batches: ``image`` (B, C, X, Y, Z) float32, ``label`` (B, 1, X, Y, Z) int64,
    ``subject_id``, ``cache_entry`` (+ ``location`` for training patches); validation and
    test batches hold one whole preprocessed volume (B = 1).
    """

    def __init__(
        self,
        data_root: str | Path,
        preset: str = "stroke",
        split_file: str | Path | None = None,
        fold: int = 0,
        cache_dir: str | Path | None = None,
        spacing_mm: float | None = None,
        patch_size: tuple[int, int, int] = (64, 64, 64),
        samples_per_volume: int = 8,
        queue_length: int = 64,
        batch_size: int = 2,
        num_workers: int = 0,
        label_probabilities: dict[int, float] | None = None,
        augmentation: str = "default",
        normalization: str = "zscore",
        crop_to_brain: bool = False,
        histogram_standardization: bool = False,
        n_folds: int = 5,
        test_fraction: float = 0.2,
        seed: int = 0,
    ):
        preset_obj = get_preset(preset)
        config = PreprocessingConfig(
            spacing_mm=spacing_mm if spacing_mm is not None else preset_obj.spacing_mm,
            crop_to_brain=crop_to_brain, normalization=normalization,
            reference=preset_obj.modalities[0])
        super().__init__(data_root, preset, preset_obj.modalities, split_file, fold, n_folds,
                         test_fraction, cache_dir, config, histogram_standardization, augmentation,
                         num_workers, seed)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_volume, self.queue_length = samples_per_volume, queue_length
        self.batch_size = batch_size
        self.label_probabilities = dict(label_probabilities or {0: 0.5, 1: 0.5})
        self.task = preset_obj.task if preset_obj.task in ("segmentation", "detection") else "segmentation"
        self.save_hyperparameters()
        self.label_key: str | None = None

    def _after_prepare(self) -> None:
        subjects = [s for subset in SUBSETS for s in self.subjects[subset]]
        present = {k for s in subjects for k in s.get_images_dict(intensity_only=False)
                   if isinstance(s[k], tio.LabelMap)}
        self.label_key = next((k for k in self.preset.label_keys if k in present), None)
        if self.label_key is None:
            raise ValueError(f"{self.data_root}: no label map {list(self.preset.label_keys)} "
                             f"for preset {self.preset.name!r}; label maps found: {sorted(present)}")
        if lacking := [s["subject_id"] for s in subjects if self.label_key not in s]:
            raise ValueError(f"subject(s) {lacking} have no {self.label_key!r} label map")

    def _label_keys(self) -> tuple[str, ...]:
        return (self.label_key,) if self.label_key else ()

    def _collate(self) -> SubjectCollate:
        return SubjectCollate(self.modalities, label_key=self.label_key)

    def train_transform(self) -> tio.Compose:
        # Pad volumes smaller than a patch (a no-op otherwise), then augment the whole volume.
        pad = tio.CropOrPad(self.patch_size, only_pad=True, padding_mode="minimum")
        return tio.Compose([pad, augmentation(self.task, self.augmentation)])

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        dataset = SeededSubjectsDataset(self._select(self.subjects["train"]),
                                        transform=self.train_transform())
        sampler = LabelPatchSampler(self.patch_size, label_name=self.label_key,
                                    label_probabilities=self.label_probabilities)
        queue = SeededQueue(dataset, self.queue_length, self.samples_per_volume, sampler,
                            num_workers=self.num_workers, seed=self.seed)
        # The queue hands out patches in the main process: its loader must have 0 workers.
        return DataLoader(queue, batch_size=self.batch_size, num_workers=0, collate_fn=self._collate(),
                          generator=self._generator(2))

    def val_dataloader(self) -> DataLoader:
        return self._volume_loader("val", self._collate())

    def test_dataloader(self) -> DataLoader:
        return self._volume_loader("test", self._collate())

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


# --------------------------------------------------------------------------- volumes
class VolumeDataModule(_CachedDataModule):
    """Whole-volume classification (AD, PD, multi-disease presets).

    Args:
        data_root, preset, split_file, fold, cache_dir, n_folds, test_fraction, num_workers,
            seed, normalization, histogram_standardization: as :class:`PatchDataModule`.
        spacing_mm: preprocessing spacing in mm; 4 mm puts an MNI-sized brain in
            ``target_shape`` (48, 56, 48) = 192 × 224 × 192 mm.
        target_shape: volume shape ``(X, Y, Z)`` after cropping to the brain (when
            ``crop_to_brain``) and padding/cropping around it.
        modalities: image channels in order; ``None`` = the preset's. Modalities the preset
            does not require (e.g. ``pet_amyloid``) may be missing: zeros + availability 0.
        tabular: clinical columns (``participants.tsv``) for ``tabular``; ``None`` = the
            preset's, ``[]`` = none. See :class:`TabularEncoder` (train statistics only).
        batch_size: volumes per batch.
        augmentation: strength of the classification augmentation preset.
        balanced_sampling: draw training subjects with ``WeightedRandomSampler`` (weights
            1 / class count, with replacement) instead of a shuffle.

    Batches: ``image`` (B, M, X, Y, Z) float32, ``availability`` (B, M) float32,
    ``label`` (B,) int64 index into ``preset.classes``, ``tabular`` (B, F) float32 (feature
    names in ``tabular_features``), ``subject_id``, ``cache_entry``.
    """

    def __init__(
        self,
        data_root: str | Path,
        preset: str = "ad",
        split_file: str | Path | None = None,
        fold: int = 0,
        cache_dir: str | Path | None = None,
        spacing_mm: float = 4.0,
        target_shape: tuple[int, int, int] = (48, 56, 48),
        modalities: list[str] | None = None,
        tabular: list[str] | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        augmentation: str = "light",
        balanced_sampling: bool = False,
        normalization: str = "zscore",
        crop_to_brain: bool = True,
        histogram_standardization: bool = False,
        n_folds: int = 5,
        test_fraction: float = 0.2,
        seed: int = 0,
    ):
        preset_obj = get_preset(preset)
        mods = tuple(modalities) if modalities is not None else preset_obj.modalities
        config = PreprocessingConfig(spacing_mm=spacing_mm, target_shape=tuple(target_shape),
                                     crop_to_brain=crop_to_brain, normalization=normalization,
                                     reference=next((m for m in mods if m in preset_obj.modalities), None))
        super().__init__(data_root, preset, mods, split_file, fold, n_folds, test_fraction,
                         cache_dir, config, histogram_standardization, augmentation, num_workers, seed)
        self.tabular = list(tabular) if tabular is not None else list(preset_obj.tabular)
        self.batch_size, self.balanced_sampling = batch_size, balanced_sampling
        self.save_hyperparameters()
        self.tabular_features: list[str] = []

    def _after_prepare(self) -> None:
        subjects = [s for subset in SUBSETS for s in self.subjects[subset]]
        if missing := [c for c in self.tabular if c not in subjects[0]]:
            raise ValueError(f"tabular column(s) {missing} not in {self.data_root}/participants.tsv "
                             f"for preset {self.preset.name!r}; pass tabular=[...] to choose columns")
        encoder = TabularEncoder(self.tabular).fit(self._table(self.subjects["train"]))
        self.tabular_features = encoder.feature_names
        for subset in SUBSETS:
            features = encoder.transform(self._table(self.subjects[subset]))
            for subject, row in zip(self.subjects[subset], features):
                subject["tabular"] = row
                subject["class_index"] = self.preset.classes.index(subject["diagnosis"])

    def _table(self, subjects: list[tio.Subject]) -> pd.DataFrame:
        return pd.DataFrame({c: [s[c] for s in subjects] for c in self.tabular},
                            index=[s["subject_id"] for s in subjects])

    def _collate(self) -> SubjectCollate:
        return SubjectCollate(self.modalities, class_key="class_index", tabular_key="tabular")

    def class_counts(self) -> dict[str, int]:
        """Training subjects per class name."""
        counts = Counter(s["class_index"] for s in self.subjects["train"])
        return {name: counts.get(i, 0) for i, name in enumerate(self.preset.classes)}

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        train = self.subjects["train"]
        dataset = SeededSubjectsDataset(self._select(train),
                                        transform=augmentation("classification", self.augmentation))
        generator = self._generator(1)
        if self.balanced_sampling:
            counts = Counter(s["class_index"] for s in train)
            weights = [1.0 / counts[s["class_index"]] for s in train]
            order = WeightedRandomSampler(weights, len(train), replacement=True, generator=generator)
        else:
            order = RandomSampler(dataset, generator=generator)
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          sampler=SeededSampler(order, generator), collate_fn=self._collate(),
                          generator=generator)

    def val_dataloader(self) -> DataLoader:
        return self._volume_loader("val", self._collate(), self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._volume_loader("test", self._collate(), self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
