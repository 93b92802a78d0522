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

Low-label experiments: ``label_fraction`` keeps only that fraction of the fold's training
participants labelled (nested, stratified subsets saved next to the split, see
:mod:`cogimg.data.label_fractions`); the rest of the fold becomes ``subjects["unlabelled"]``,
whose images — never labels — :meth:`unlabelled_dataloader` serves to semi-supervised tasks.
Validation and test subjects are the same for every fraction.

Determinism: every random draw (subject order, patch locations, augmentation parameters)
comes from a ``torch.Generator`` seeded with ``seed`` — augmentation of each subject runs
under its own seed drawn from it — so batches are the same for any ``num_workers`` and do
not depend on (or change) the global RNG (see :mod:`cogimg.data.sampling`).

Exact resume: the datamodule's ``state_dict`` (stored in every checkpoint) holds, per process,
the state of each training stream's queue or sampler and, mid-epoch, its position in the
epoch; ``load_state_dict`` restores them into the loaders (all
:class:`~cogimg.data.resumable.ResumableLoader`) that the next ``train_dataloader`` builds
(:class:`~cogimg.data.streams.TrainingStreams`), so the rest of an interrupted epoch and the
epochs after it draw what they would have drawn (a queue re-draws the patches of its
interrupted pass up to there; a sampler skips the items already handed out without loading
them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import pandas as pd
import torch
import torchio as tio
from torch.utils.data import (
    DataLoader,
    RandomSampler,
    SequentialSampler,
    WeightedRandomSampler,
)

from cogimg.data.augmentation import augmentation
from cogimg.data.bids import load_dataset
from cogimg.data.cache import VolumeCache
from cogimg.data.label_fractions import labelled_subset
from cogimg.data.ood import summarise_inputs
from cogimg.data.participants import participants_hash, sessions_table, subjects_for
from cogimg.data.randomise import RECIPES, TISSUE_KEY, randomisation
from cogimg.data.resumable import ResumableLoader
from cogimg.data.sampling import (
    LabelPatchSampler,
    SeededQueue,
    SeededSampler,
    SeededSubjectsDataset,
    SubjectCollate,
)
from cogimg.data.splits import check_leakage, load_split, make_kfold_split, save_split
from cogimg.data.streams import LABELLED, PatchStream, TrainingStreams, distributed_subjects
from cogimg.data.tabular import TabularEncoder
from cogimg.data.transforms import PreprocessingConfig, fit_histogram_landmarks
from cogimg.diseases import get_preset

SUBSETS = ("train", "val", "test")


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
                 num_workers, seed, label_fraction=None, label_seed=0):
        super().__init__()
        if label_fraction is not None and not 0 < label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1] or None, got {label_fraction}")
        self.label_fraction, self.label_seed = label_fraction, label_seed
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
        self.input_summary: dict | None = None
        self._streams: dict[str, int | None] = {}  # requested extra streams → batch size
        self.training_streams = TrainingStreams()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Stored in every checkpoint: what ``cogimg predict`` needs to preprocess a new scan
        exactly as in training (preset, input modalities in channel order, preprocessing),
        the training inputs' summary (the OOD check's reference) and ``training_streams``
        (:meth:`TrainingStreams.state <cogimg.data.streams.TrainingStreams.state>`)."""
        state = {"preset": self.preset.name, "modalities": list(self.modalities),
                 "preprocessing": self.config.to_dict()}
        if self.input_summary is not None:
            state["input_summary"] = self.input_summary
        trainer = getattr(self, "trainer", None)
        streams = self.training_streams.state(getattr(trainer, "num_training_batches", None))
        if streams is not None:
            state["training_streams"] = streams
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Keep this process's training-stream states for the next :meth:`train_dataloader`
        (the rest is rebuilt from the config)."""
        self.training_streams.load(state_dict.get("training_streams"))

    # ------------------------------------------------------------ preparation
    def prepare_data(self) -> None:
        """Make/save the split and fill the cache (once, on the first process)."""
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if not self.subjects:
            self._prepare()
        self._streams = {}  # requested anew by the task of each fit

    def _prepare(self) -> None:
        dataset = load_dataset(self.data_root, required_modalities=self.required,
                               modalities=self.modalities, diagnoses=self.preset.diagnoses)
        if not dataset.subjects:
            raise ValueError(f"no subject of {self.data_root} has diagnosis in "
                             f"{list(self.preset.diagnoses)} and modalities {list(self.required)}")
        ids = self._fold_ids(dataset)
        raw = {s: subjects_for(dataset.subjects, ids[s]) for s in ids}
        if self.histogram_standardization:
            path = self.cache_dir / "landmarks" / f"{self._split_stem()}_fold{self.fold}.json"
            # Unlabelled images count too, so the landmarks do not depend on label_fraction.
            train = raw["train"] + raw.get("unlabelled", [])
            if not path.exists():
                fit_histogram_landmarks(train, self.modalities_present(train), path)
            self.config = dataclasses.replace(self.config, histogram_landmarks=str(path))
        cache = VolumeCache(self.cache_dir / "volumes", self.config)
        everything = cache.warm([s for subset in raw.values() for s in subset], workers=self.num_workers)
        by_id = {s["subject_id"]: s for s in everything}
        self.subjects = {subset: [by_id[s["subject_id"]] for s in members] for subset, members in raw.items()}
        self.cache = cache
        self._after_prepare()
        train = self.subjects["train"]
        self.input_summary = summarise_inputs(train, self.modalities_present(train),
                                              transform=self._summary_transform(), seed=self.seed)

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
        if self.label_fraction is None:
            return split.fold(self.fold)
        return labelled_subset(self.split_path, self.fold, self.label_fraction, self.label_seed,
                               dataset.participants)

    def _after_prepare(self) -> None:
        """Subclasses: fit train-set statistics once the cached subjects are known."""

    def _summary_transform(self) -> Callable | None:
        """The transform whose seeded draws the OOD summary describes (``None``: the cached
        training images themselves, which is what the network sees unless a subclass redraws
        them)."""
        return None

    # ------------------------------------------------------------ training streams
    def stream_loaders(self) -> dict[str, Callable[[int | None], DataLoader]]:
        """Extra training streams this datamodule can serve (name → loader factory taking a
        batch size, ``None`` = the datamodule's): ``unlabelled`` when ``label_fraction`` < 1."""
        return {"unlabelled": self.unlabelled_dataloader} if self.subjects.get("unlabelled") else {}

    def stream_names(self) -> tuple[str, ...]:
        self._require_setup()
        return tuple(self.stream_loaders())

    def request_streams(self, batch_sizes: Mapping[str, int | None]) -> None:
        """Serve these streams beside the labelled batches in training (asked by the task for
        its add-ons): ``train_dataloader`` then yields ``{"labelled": batch, <name>: batch …}``."""
        if unknown := sorted(set(batch_sizes) - set(self.stream_names())):
            raise ValueError(f"{type(self).__name__} offers no training stream {unknown} "
                             f"(it offers {list(self.stream_names()) or 'none'})")
        self._streams = dict(batch_sizes)

    def train_dataloader(self):
        """The labelled loader, or — with requested streams — one ``CombinedLoader`` whose
        epoch is the labelled loader's and whose other streams cycle; a checkpoint's stream
        states restored into them."""
        factories = self.stream_loaders()
        return self.training_streams.combine(
            {LABELLED: self.labelled_dataloader(),
             **{name: factories[name](size) for name, size in self._streams.items()}})

    def labelled_dataloader(self) -> DataLoader:
        raise NotImplementedError

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

    def _select(self, subjects: list[tio.Subject], labels: bool = True) -> list[tio.Subject]:
        """Subjects reduced to the images the model reads (augmenting others would waste time),
        without label maps when not ``labels``."""
        keep = set(self.modalities) | (set(self._label_keys()) if labels else set())
        return [tio.Subject({k: v for k, v in s.items() if not isinstance(v, tio.Image) or k in keep})
                for s in subjects]

    def _label_keys(self) -> tuple[str, ...]:
        return ()

    def _unlabelled(self) -> list[tio.Subject]:
        self._require_setup()
        if not self.subjects.get("unlabelled"):
            raise ValueError("no unlabelled subjects: set the datamodule's label_fraction below 1 "
                             "(e.g. label_fraction: 0.1) for semi-supervised training")
        return self._select(self.subjects["unlabelled"], labels=False)


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
        spacing_mm: preprocessing spacing in mm, one value (isotropic) or three (X, Y, Z,
            e.g. from ``cogimg plan``); ``None`` = the preset's.
        patch_size: training patch size ``(X, Y, Z)`` in voxels.
        samples_per_volume: patches drawn from each (augmented) volume.
        queue_length: patches held by the queue (``tio.Queue`` max_length; rounded up to a
            multiple of ``samples_per_volume``).
        batch_size: patches per training batch.
        num_workers: processes that load/augment subjects (and warm the cache).
        label_probabilities: probability that a patch centre falls on each label value
            (``tio.LabelSampler``): ``{0: 0.5, 1: 0.5}`` = half the patches centred on lesion.
        centre_jitter: patches are shifted by up to this many voxels per axis from the drawn
            centre, so lesions are not always mid-patch (see
            :class:`~cogimg.data.sampling.LabelPatchSampler`).
        augmentation: strength of :func:`~cogimg.data.augmentation.augmentation` for the task.
        normalization / crop_to_brain / histogram_standardization: see
            :func:`~cogimg.data.transforms.preprocessing` (landmarks fitted on the train fold);
            the intensity clip is the preset's ``clip_percentiles``.
        seed: seeds subject order, patch sampling and augmentation.
        label_fraction: fraction of the fold's training participants that keep their labels
            (``None`` = all); the others feed :meth:`unlabelled_dataloader`.
        label_seed: seeds which participants are labelled (nested across fractions).
        foreground: the preprocessing's normalisation mask (``"head"``: the real-scan head
            mask of :mod:`cogimg.data.real_scan`, stored in the checkpoint for prediction).
        randomise: domain-randomisation recipe (:data:`cogimg.data.randomise.RECIPES`):
            training images are redrawn from the tissue/lesion label maps instead of augmented;
            validation and test keep the cohort's images, and the OOD check's training summary
            is of seeded draws (:func:`cogimg.data.ood.summarise_inputs`). ``None`` = off.

    Batches: ``image`` (B, C, X, Y, Z) float32, ``label`` (B, 1, X, Y, Z) int64,
    ``subject_id``, ``cache_entry`` (+ ``location`` for training patches); validation and
    test batches hold one whole preprocessed volume (B = 1). Unlabelled batches: the same
    without ``label``.
    """

    def __init__(
        self,
        data_root: str | Path,
        preset: str = "stroke",
        split_file: str | Path | None = None,
        fold: int = 0,
        cache_dir: str | Path | None = None,
        spacing_mm: float | tuple[float, float, float] | None = None,
        patch_size: tuple[int, int, int] = (64, 64, 64),
        samples_per_volume: int = 8,
        queue_length: int = 64,
        batch_size: int = 2,
        num_workers: int = 0,
        label_probabilities: dict[int, float] | None = None,
        centre_jitter: int = 0,
        augmentation: str = "default",
        normalization: str = "zscore",
        crop_to_brain: bool = False,
        histogram_standardization: bool = False,
        n_folds: int = 5,
        test_fraction: float = 0.2,
        seed: int = 0,
        label_fraction: float | None = None,
        label_seed: int = 0,
        foreground: str = "mean",
        randomise: str | None = None,
    ):
        preset_obj = get_preset(preset)
        config = PreprocessingConfig(
            spacing_mm=spacing_mm if spacing_mm is not None else preset_obj.spacing_mm,
            crop_to_brain=crop_to_brain, normalization=normalization,
            clip_percentiles=preset_obj.clip_percentiles,
            reference=preset_obj.modalities[0], foreground=foreground)
        if randomise is not None and randomise not in RECIPES:
            raise ValueError(f"unknown randomise recipe {randomise!r}; expected one of {sorted(RECIPES)}")
        self.randomise = randomise
        super().__init__(data_root, preset, preset_obj.modalities, split_file, fold, n_folds,
                         test_fraction, cache_dir, config, histogram_standardization, augmentation,
                         num_workers, seed, label_fraction, label_seed)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_volume, self.queue_length = samples_per_volume, queue_length
        self.batch_size = batch_size
        self.label_probabilities = dict(label_probabilities or {0: 0.5, 1: 0.5})
        self.centre_jitter = int(centre_jitter)
        self.task = preset_obj.task if preset_obj.task in ("segmentation", "detection") else "segmentation"
        self.save_hyperparameters()
        self.label_key: str | None = None

    def _after_prepare(self) -> None:
        subjects = [s for subset in self.subjects.values() for s in subset]
        present = {k for s in subjects for k in s.get_images_dict(intensity_only=False)
                   if isinstance(s[k], tio.LabelMap)}
        self.label_key = next((k for k in self.preset.label_keys if k in present), None)
        if self.label_key is None:
            raise ValueError(f"{self.data_root}: no label map {list(self.preset.label_keys)} "
                             f"for preset {self.preset.name!r}; label maps found: {sorted(present)}")
        if lacking := [s["subject_id"] for s in subjects if self.label_key not in s]:
            raise ValueError(f"subject(s) {lacking} have no {self.label_key!r} label map")
        if self.randomise and (lacking := [s["subject_id"] for s in self.subjects["train"]
                                           if TISSUE_KEY not in s]):
            raise ValueError(f"randomise={self.randomise!r} needs the {TISSUE_KEY!r} label map "
                             f"(derivatives/truth/*_desc-tissue_dseg.nii.gz, written by cogimg "
                             f"synth); {self.data_root} lacks it for {lacking[:5]}")

    def _summary_transform(self) -> Callable | None:
        return self.train_transform() if self.randomise else None  # the draws it trains on

    def _label_keys(self) -> tuple[str, ...]:
        keys = (self.label_key,) if self.label_key else ()
        return keys + (TISSUE_KEY,) if self.randomise else keys

    def _collate(self) -> SubjectCollate:
        return SubjectCollate(self.modalities, label_key=self.label_key)

    def train_transform(self) -> tio.Compose:
        # Pad volumes smaller than a patch (a no-op otherwise), then augment the whole volume.
        pad = tio.CropOrPad(self.patch_size, only_pad=True, padding_mode="minimum")
        if self.randomise:  # images redrawn from the label maps (cogimg.data.randomise)
            return tio.Compose([pad, randomisation(self.randomise, self.modalities, self.label_key,
                                                   self.preset.clip_percentiles)])
        return tio.Compose([pad, augmentation(self.task, self.augmentation)])

    def labelled_dataloader(self) -> DataLoader:
        self._require_setup()
        dataset = SeededSubjectsDataset(self._select(self.subjects["train"]),
                                        transform=self.train_transform())
        sampler = LabelPatchSampler(self.patch_size, label_name=self.label_key,
                                    label_probabilities=self.label_probabilities,
                                    centre_jitter=self.centre_jitter)
        queue = SeededQueue(dataset, self.queue_length, self.samples_per_volume, sampler,
                            subject_sampler=distributed_subjects(len(dataset), self.seed),
                            num_workers=self.num_workers, seed=self.seed)
        # The queue hands out patches in the main process: its loader must have 0 workers.
        return ResumableLoader(PatchStream(queue), batch_size=self.batch_size, num_workers=0,
                               collate_fn=self._collate(), generator=self._generator(2))

    def unlabelled_dataloader(self, batch_size: int | None = None,
                              subjects: list[tio.Subject] | None = None) -> DataLoader:
        """Augmented patches, uniformly placed, without labels, of ``subjects`` (default: the
        unlabelled subjects of ``label_fraction``)."""
        pad = tio.CropOrPad(self.patch_size, only_pad=True, padding_mode="minimum")
        chosen = self._unlabelled() if subjects is None else self._select(subjects, labels=False)
        dataset = SeededSubjectsDataset(chosen, transform=tio.Compose(
            [pad, augmentation(self.task, self.augmentation)]))
        queue = SeededQueue(dataset, self.queue_length, self.samples_per_volume,
                            tio.UniformSampler(self.patch_size), num_workers=self.num_workers,
                            subject_sampler=distributed_subjects(len(dataset), self.seed + 7),
                            seed=self.seed + 7)
        return ResumableLoader(PatchStream(queue), batch_size=batch_size or self.batch_size,
                               num_workers=0, collate_fn=SubjectCollate(self.modalities),
                               generator=self._generator(5))

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
        data_root, preset, split_file, fold, cache_dir, n_folds, test_fraction: as
            :class:`PatchDataModule`, and so are ``num_workers``, ``seed``,
            ``normalization`` and ``histogram_standardization``.
        spacing_mm: preprocessing spacing in mm; 4 mm puts an MNI-sized brain in
            ``target_shape`` (48, 56, 48) = 192 × 224 × 192 mm.
        target_shape: volume shape ``(X, Y, Z)`` after cropping to the brain (when
            ``crop_to_brain``) and padding/cropping around it.
        modalities: image channels in order; ``None`` = the preset's. Modalities the preset
            does not require (e.g. ``pet_amyloid``) may be missing: zeros + availability 0.
        tabular: clinical columns (``participants.tsv``) for ``tabular``; ``None`` = the
            preset's, ``[]`` = none. See :class:`~cogimg.data.tabular.TabularEncoder` (train statistics only).
        batch_size: volumes per batch.
        augmentation: strength of the classification augmentation preset.
        balanced_sampling: draw training subjects with ``WeightedRandomSampler`` (weights
            1 / class count, with replacement) instead of a shuffle.
        label_fraction, label_seed: as :class:`PatchDataModule`.

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
        label_fraction: float | None = None,
        label_seed: int = 0,
    ):
        preset_obj = get_preset(preset)
        mods = tuple(modalities) if modalities is not None else preset_obj.modalities
        config = PreprocessingConfig(spacing_mm=spacing_mm, target_shape=tuple(target_shape),
                                     crop_to_brain=crop_to_brain, normalization=normalization,
                                     clip_percentiles=preset_obj.clip_percentiles,
                                     reference=next((m for m in mods if m in preset_obj.modalities), None))
        super().__init__(data_root, preset, mods, split_file, fold, n_folds, test_fraction,
                         cache_dir, config, histogram_standardization, augmentation, num_workers, seed,
                         label_fraction, label_seed)
        self.tabular = list(tabular) if tabular is not None else list(preset_obj.tabular)
        self.batch_size, self.balanced_sampling = batch_size, balanced_sampling
        self.save_hyperparameters()
        self.tabular_features: list[str] = []

    def _after_prepare(self) -> None:
        subjects = [s for subset in self.subjects.values() for s in subset]
        if missing := [c for c in self.tabular if c not in subjects[0]]:
            raise ValueError(f"tabular column(s) {missing} not in {self.data_root}/participants.tsv "
                             f"for preset {self.preset.name!r}; pass tabular=[...] to choose columns")
        encoder = TabularEncoder(self.tabular).fit(self._table(self.subjects["train"]))
        self.tabular_features = encoder.feature_names
        for subset in [name for name, members in self.subjects.items() if members]:
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

    def labelled_dataloader(self) -> DataLoader:
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
        return ResumableLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                               sampler=SeededSampler(order, generator), collate_fn=self._collate(),
                               generator=generator)

    def unlabelled_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Shuffled, augmented unlabelled volumes: the training batch keys without ``label``."""
        dataset = SeededSubjectsDataset(self._unlabelled(),
                                        transform=augmentation("classification", self.augmentation))
        generator = self._generator(5)
        order = SeededSampler(RandomSampler(dataset, generator=generator), generator)
        return ResumableLoader(dataset, batch_size=batch_size or self.batch_size, sampler=order,
                               num_workers=self.num_workers, generator=generator,
                               collate_fn=SubjectCollate(self.modalities, tabular_key="tabular"))

    def val_dataloader(self) -> DataLoader:
        return self._volume_loader("val", self._collate(), self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._volume_loader("test", self._collate(), self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
