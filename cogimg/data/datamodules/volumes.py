"""Whole-volume classification (:class:`VolumeDataModule`): volumes cropped/padded to a fixed
shape, the class index from the preset, standardised tabular features and a per-modality
availability mask."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
import torchio as tio
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from cogimg.data.augmentation import augmentation
from cogimg.data.datamodules.base import CachedDataModule
from cogimg.data.resumable import ResumableLoader
from cogimg.data.sampling import SeededSampler, SeededSubjectsDataset, SubjectCollate
from cogimg.data.tabular import TabularEncoder
from cogimg.data.transforms import PreprocessingConfig
from cogimg.diseases import get_preset


class VolumeDataModule(CachedDataModule):
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
