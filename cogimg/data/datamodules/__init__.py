"""LightningDataModules driven by a disease preset: dataset + split + cache + transforms.

- :class:`PatchDataModule` (segmentation, detection; :mod:`.patches`): a ``tio.Queue`` of
  label-weighted patches for training; whole preprocessed volumes (batch 1) for validation
  and test, for sliding-window inference by the task.
- :class:`VolumeDataModule` (classification; :mod:`.volumes`): whole volumes cropped/padded to
  a fixed shape, the class index from the preset, standardised tabular features and a
  per-modality availability mask.

Both share :class:`~cogimg.data.datamodules.base.CachedDataModule` (:mod:`.base`: dataset,
split, cache, low-label subsets, seeded loaders, exact resume). Configs name them here
(``class_path: cogimg.data.datamodules.PatchDataModule``).
"""

from cogimg.data.datamodules.base import SUBSETS, CachedDataModule, default_cache_dir
from cogimg.data.datamodules.patches import PatchDataModule
from cogimg.data.datamodules.volumes import VolumeDataModule

__all__ = ["SUBSETS", "CachedDataModule", "PatchDataModule", "VolumeDataModule", "default_cache_dir"]
