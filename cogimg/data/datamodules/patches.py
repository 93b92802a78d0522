"""Patch-based training for segmentation and detection presets (:class:`PatchDataModule`):
a ``tio.Queue`` of label-weighted patches for training — augmented, or redrawn from label maps
by a domain-randomisation recipe (:mod:`cogimg.data.randomise`) — and whole preprocessed
volumes (batch 1) for validation and test, for sliding-window inference by the task."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torchio as tio
from torch.utils.data import DataLoader

from cogimg.data.augmentation import augmentation
from cogimg.data.datamodules.base import CachedDataModule
from cogimg.data.randomise import RECIPES, TISSUE_KEY, randomisation
from cogimg.data.resumable import ResumableLoader
from cogimg.data.sampling import (
    LabelPatchSampler,
    SeededQueue,
    SeededSubjectsDataset,
    SubjectCollate,
)
from cogimg.data.streams import PatchStream, distributed_subjects
from cogimg.data.transforms import PreprocessingConfig
from cogimg.diseases import get_preset


class PatchDataModule(CachedDataModule):
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
        balance_components: a lesion-centred patch is centred on each lesion (connected
            component) equally often, whatever its size, instead of on each lesion voxel
            equally often (see :class:`~cogimg.data.sampling.LabelPatchSampler`).
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
        balance_components: bool = False,
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
        self.balance_components = bool(balance_components)
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
                                    centre_jitter=self.centre_jitter,
                                    balance_components=self.balance_components)
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
