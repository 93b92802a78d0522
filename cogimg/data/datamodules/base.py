"""The image datamodules' shared base: dataset, split, cache, seeded loaders, training streams.

:class:`CachedDataModule` loads the BIDS tree with :func:`cogimg.data.bids.load_dataset`, takes
subjects from a split file (when none is given, a k-fold split is made once, saved under
``<cache_dir>/splits/`` and reused), preprocesses every subject once into a
:class:`~cogimg.data.cache.VolumeCache` and afterwards reads only the cache. It knows nothing
about models; :class:`~cogimg.data.datamodules.patches.PatchDataModule` and
:class:`~cogimg.data.datamodules.volumes.VolumeDataModule` add their loaders.

Low-label experiments: ``label_fraction`` keeps only that fraction of the fold's training
participants labelled (nested, stratified subsets saved next to the split, see
:mod:`cogimg.data.label_fractions`); the rest of the fold becomes ``subjects["unlabelled"]``,
whose images — never labels — ``unlabelled_dataloader`` serves to semi-supervised tasks.
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
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import torch
import torchio as tio
from torch.utils.data import DataLoader, SequentialSampler

from cogimg.data.bids import load_dataset
from cogimg.data.cache import VolumeCache
from cogimg.data.label_fractions import labelled_subset
from cogimg.data.ood import summarise_inputs
from cogimg.data.participants import participants_hash, sessions_table, subjects_for
from cogimg.data.sampling import SeededSubjectsDataset, SubjectCollate
from cogimg.data.splits import check_leakage, load_split, make_kfold_split, save_split
from cogimg.data.streams import LABELLED, TrainingStreams
from cogimg.data.transforms import PreprocessingConfig, fit_histogram_landmarks
from cogimg.diseases import get_preset

SUBSETS = ("train", "val", "test")


def default_cache_dir(data_root: str | Path) -> Path:
    """``$COGIMG_CACHE`` (default ``~/.cache/cogimg``) / ``<dataset name>-<hash of its path>``."""
    root = Path(data_root).expanduser().resolve()
    base = Path(os.environ.get("COGIMG_CACHE", "~/.cache/cogimg")).expanduser()
    return base / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


class CachedDataModule(L.LightningDataModule):
    """Shared by the image datamodules: dataset, split, cache, seeded loaders (module docstring)."""

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
