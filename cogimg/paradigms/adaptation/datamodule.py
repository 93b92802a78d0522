"""Unlabelled target-site data for domain adaptation, handled by the datamodule.

:class:`TargetSiteVolumeDataModule` (classification) and :class:`TargetSitePatchDataModule`
(segmentation) are the usual datamodules that also offer a ``target`` training stream
(:meth:`~cogimg.data.datamodules.PatchDataModule.request_streams`): batches of the *target*
subjects' volumes or patches (by default the split's test subjects — under a leave-site-out
split, the held-out site), served beside the labelled batch when an add-on asks for them
(:class:`~cogimg.paradigms.adaptation.DomainAdaptation` does). Target batches carry images (and availability, tabular features) and
``subject_id`` but **no label**: the collate function never reads their diagnosis, and target
patches are cut from volumes stripped of their label maps, placed uniformly. The labelled
loader sets the epoch; the target stream cycles.
This is the transductive setting of unsupervised domain adaptation (Ganin et al. 2016):
the target site's images, never its labels, are seen in training.
"""

from __future__ import annotations

from torch.utils.data import DataLoader, RandomSampler

from cogimg.data.augmentation import augmentation
from cogimg.data.datamodules import SUBSETS, PatchDataModule, VolumeDataModule
from cogimg.data.resumable import ResumableLoader
from cogimg.data.sampling import SeededSampler, SeededSubjectsDataset, SubjectCollate


class _TargetSite:
    """The target subset's options and subjects, shared by both datamodules (first base)."""

    def __init__(self, *args, target_subset: str = "test", target_batch_size: int | None = None,
                 **kwargs) -> None:
        if target_subset not in SUBSETS or target_subset == "train":
            raise ValueError(f"target_subset={target_subset!r}; choose 'test' or 'val'")
        self.target_subset = target_subset
        self.target_batch_size = target_batch_size
        super().__init__(*args, **kwargs)

    def _target_subjects(self) -> list:
        self._require_setup()
        target = self.subjects[self.target_subset]
        if not target:
            raise ValueError(f"target_subset {self.target_subset!r} of the split is empty; "
                             "use a leave-site-out split (its test subset is the held-out site)")
        return target


class TargetSiteVolumeDataModule(_TargetSite, VolumeDataModule):
    """VolumeDataModule + unlabelled target batches in training.

    Args:
        target_subset: which subset's images are the unlabelled target (``test``).
        target_batch_size: target volumes per training batch (``None`` = ``batch_size``).
        **kwargs: :class:`~cogimg.data.datamodules.VolumeDataModule` arguments.
    """

    def target_dataloader(self) -> DataLoader:
        """Shuffled, augmented, label-free loader over the target subjects."""
        dataset = SeededSubjectsDataset(self._select(self._target_subjects()),
                                        transform=augmentation("classification", self.augmentation))
        generator = self._generator(4)
        order = RandomSampler(dataset, generator=generator)
        collate = SubjectCollate(self.modalities, tabular_key="tabular")  # no class_key: no labels
        return ResumableLoader(dataset, batch_size=self.target_batch_size or self.batch_size,
                               num_workers=self.num_workers, sampler=SeededSampler(order, generator),
                               collate_fn=collate, generator=generator)

    def stream_loaders(self) -> dict:
        return {**super().stream_loaders(), "target": lambda _size: self.target_dataloader()}


class TargetSitePatchDataModule(_TargetSite, PatchDataModule):
    """PatchDataModule + unlabelled target-site patches in training.

    Training streams ``target`` and ``source_uniform``. Target patches are placed
    uniformly (without labels there is no lesion to centre on), while the labelled source
    patches are centred on lesions at ``label_probabilities``; a site classifier would tell
    the two apart by content, and gradient reversal would then erase what marks a lesion (so it
    did before ``source_uniform``; ``studies/leave_site_out.yaml``). ``source_uniform``
    are training-site patches placed like the target's, and the domain loss compares those
    with the target's.

    Args:
        target_subset: which subset's volumes are the unlabelled target (``test``).
        target_batch_size: target patches per training batch (``None`` = ``batch_size``).
        **kwargs: :class:`~cogimg.data.datamodules.PatchDataModule` arguments.
    """

    def target_dataloader(self) -> DataLoader:
        """Augmented, label-free patches of the target subjects, placed uniformly."""
        return self.unlabelled_dataloader(self.target_batch_size, subjects=self._target_subjects())

    def stream_loaders(self) -> dict:
        return {**super().stream_loaders(), "target": lambda _size: self.target_dataloader(),
                "source_uniform": lambda _size: self.unlabelled_dataloader(
                    self.target_batch_size, subjects=self.subjects["train"])}
