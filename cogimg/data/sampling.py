"""Seeded patch sampling and batching for the datamodules, on TorchIO's public API.

- :class:`SeededSampler`, :class:`SeededSubjectsDataset`, :class:`SeededQueue`: every random
  draw (subject order, augmentation parameters, patch locations) comes from a
  ``torch.Generator``, so batches are the same for any ``num_workers`` and the global RNG is
  neither read nor changed. The queue takes an optional ``subject_sampler`` (e.g. a
  ``DistributedSampler``) that decides which subjects this process loads. Queue and sampler
  save and restore their state (``state_dict``/``load_state_dict``) for exact resume.
- :class:`LabelPatchSampler`: ``tio.LabelSampler``'s patch-centre distribution, drawn cheaply.
- :class:`SubjectCollate`: ``tio.Subject`` samples → a batch dict of tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from torch.utils.data import RandomSampler, Sampler

from cogimg.data.boxes import label_components
from cogimg.data.cache import load_subject


# --------------------------------------------------------------------------- seeding
def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def _rank_seed(seed: int, rank: int) -> int:
    """``seed`` on rank 0; elsewhere an independent seed derived from ``(seed, rank)``, so that
    ranks do not draw the same augmentations for their k-th subjects."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 2)


class SeededSampler(Sampler):
    """Wrap a sampler so it yields ``(index, seed)``; the seed comes from ``generator`` and
    makes the item's random transform reproducible whichever worker runs it.

    Each pass over this sampler is one epoch: if the wrapped sampler has ``set_epoch`` (a
    ``DistributedSampler``), pass ``k`` (from 0) first calls ``sampler.set_epoch(k)``, so the
    subject order changes between passes and stays the same on every rank.

    Resumable (``generator`` must be the only generator the wrapped sampler draws from):
    :meth:`state_dict` holds the epoch and generator state now and at the start of the pass in
    progress; after :meth:`load_state_dict` the next pass continues from there, and
    :meth:`resume_at` makes it instead replay the interrupted pass from its start, skipping
    (drawing but not yielding) its first items.
    """

    def __init__(self, sampler: Sampler, generator: torch.Generator):
        self.sampler, self.generator = sampler, generator
        self.epoch = 0
        self._pass_start: dict | None = None  # epoch and generator state of the pass in progress
        self._resume: tuple[dict, int] | None = None

    def __iter__(self):
        skip = 0
        if self._resume is not None:
            start, skip = self._resume
            self._resume = None
            self.epoch = int(start["epoch"])
            self.generator.set_state(start["generator"])
        self._pass_start = {"epoch": self.epoch, "generator": self.generator.get_state()}
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        self.epoch += 1
        # The whole order first: a sampler may draw again when it is exhausted (RandomSampler
        # does), and a pass must end with all of its draws made.
        order = [int(index) for index in self.sampler]
        for position, index in enumerate(order):
            seed = _draw_seed(self.generator)
            if position >= skip:
                yield index, seed

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict:
        """``epoch`` (of the next pass), ``generator`` (state now, a uint8 tensor) and
        ``pass_start`` (both at the start of the pass in progress; ``None`` before the first)."""
        return {"epoch": self.epoch, "generator": self.generator.get_state(),
                "pass_start": self._pass_start}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"])
        self._pass_start = state["pass_start"]

    def resume_at(self, items: int) -> None:
        """Make the next pass the pass in progress at :meth:`state_dict` time, from its item
        ``items`` on (what a loader interrupted mid-epoch has not yet handed out)."""
        if self._pass_start is None:
            raise RuntimeError("SeededSampler.resume_at: no pass was in progress in the loaded state")
        self._resume = (self._pass_start, int(items))


class SeededSubjectsDataset(tio.SubjectsDataset):
    """``tio.SubjectsDataset`` of cached subjects whose ``dataset[(index, seed)]`` runs the
    transform under ``torch.manual_seed(seed)`` without touching the caller's global RNG;
    ``dataset[index]`` runs it on the caller's RNG."""

    def __init__(self, subjects: Sequence[tio.Subject], transform=None):
        super().__init__(subjects, transform=transform, load_getitem=False)

    def set_transform(self, transform) -> None:
        super().set_transform(transform)  # validates it
        self.transform = transform

    def __getitem__(self, index):
        if not isinstance(index, tuple):
            return self._load_and_transform(index)
        index, seed = index
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._load_and_transform(index)

    def _load_and_transform(self, index: int) -> tio.Subject:
        subject = load_subject(copy.deepcopy(self.dry_iter()[int(index)]))
        return self.transform(subject) if self.transform is not None else subject


class SeededQueue(tio.Queue):
    """``tio.Queue`` whose subject order, augmentation and patch sampling come from one seed.

    Args:
        subjects_dataset: the subjects; items are loaded and transformed in the
            ``num_workers`` loader processes under per-item seeds.
        max_length, samples_per_volume, sampler, num_workers, shuffle_patches, verbose: as for
            ``tio.Queue``; ``max_length`` is rounded up to a multiple of
            ``samples_per_volume``, so that a subject's patches never straddle two refills.
        subject_sampler: which subjects this process loads, in which order (indices into
            ``subjects_dataset``); default a shuffle driven by ``seed``. Give a
            ``DistributedSampler`` under DDP: each rank then loads its own share of the
            subjects, and :class:`SeededSampler` advances its epoch at every pass.
        seed: seeds the per-item seeds, the default subject order and the patch draws; on a
            ``subject_sampler`` with ``rank > 0`` it is first mixed with the rank.

    Patch locations and the patch shuffle are drawn in the main process, under a seed drawn
    from a second generator at each refill (worker prefetching consumes the per-item seed
    stream ahead of time, so the two must not share a generator). ``len(queue)`` is
    ``len(subject_sampler) × samples_per_volume`` patches per epoch.

    Resumable: the patches form one stream, cut into passes of ``len(queue)`` patches (one
    pass over the subjects); a pass ends with an empty queue and starts its subject loader
    anew (lazily, at the first refill). :meth:`state_dict` holds the generator states and
    sampler epoch at the start of the pass in progress and the number of patches handed out
    since; :meth:`load_state_dict`, on a queue that has handed out nothing, restores them and
    re-draws those patches (loading their subjects again) before the next one is handed out.
    """

    def __init__(self, subjects_dataset: SeededSubjectsDataset, max_length: int,
                 samples_per_volume: int, sampler: tio.PatchSampler, *,
                 subject_sampler: Sampler | None = None, num_workers: int = 0, seed: int = 0,
                 shuffle_patches: bool = True, verbose: bool = False):
        if not isinstance(subjects_dataset, SeededSubjectsDataset):
            raise TypeError("SeededQueue needs a SeededSubjectsDataset (it loads items by "
                            f"(index, seed)), got {type(subjects_dataset).__name__}")
        stream_seed = _rank_seed(seed, int(getattr(subject_sampler, "rank", 0)))
        self.generator = torch.Generator().manual_seed(stream_seed)
        self.patch_generator = torch.Generator().manual_seed(stream_seed + 1)
        if subject_sampler is None:
            subject_sampler = RandomSampler(range(len(subjects_dataset)), generator=self.generator)
        max_length = -(-int(max_length) // int(samples_per_volume)) * int(samples_per_volume)
        # The subject loader starts at the first refill (not here): a restored state must be
        # in place before it draws its first seeds.
        super().__init__(subjects_dataset, max_length, samples_per_volume, sampler,
                         subject_sampler=SeededSampler(subject_sampler, self.generator),
                         num_workers=num_workers, shuffle_subjects=False,
                         shuffle_patches=shuffle_patches, start_background=False, verbose=verbose)
        self._pass_length = self.iterations_per_epoch
        self._pass_start = self._snapshot()
        self._handed_out = 0  # patches handed out in the pass in progress
        self._replay = 0  # patches to re-draw (and drop) before the next is handed out

    @property
    def iterations_per_epoch(self) -> int:
        # TorchIO's version iterates the subject sampler, which would consume seeds.
        if any(getattr(s, tio.constants.NUM_SAMPLES, None) is not None
               for s in self.subjects_dataset.dry_iter()):
            raise ValueError(f"SeededQueue needs the same number of patches from every subject; "
                             f"remove the subjects' {tio.constants.NUM_SAMPLES!r} attribute")
        return len(self.subject_sampler) * self.samples_per_volume

    def __len__(self) -> int:
        return self._pass_length

    def __getitem__(self, index) -> tio.Subject:
        while self._replay:
            self._replay -= 1
            self._next_patch()
        return self._next_patch()

    def _next_patch(self) -> tio.Subject:
        if self._handed_out >= self._pass_length:  # a pass ends with an empty queue
            self._pass_start, self._handed_out = self._snapshot(), 0
        self._handed_out += 1
        if self.patches_list:
            return super().__getitem__(0)
        # An empty queue refills now. Patch cutting is many small tensor ops, so intra-op
        # threads would only contend with the training step that runs in this process.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_draw_seed(self.patch_generator))
                return super().__getitem__(0)
        finally:
            torch.set_num_threads(threads)

    # ------------------------------------------------------------ resuming
    def _snapshot(self) -> dict:
        return {"generator": self.generator.get_state(),
                "patch_generator": self.patch_generator.get_state(),
                "epoch": self.subject_sampler.epoch}

    def state_dict(self) -> dict:
        """``pass_start`` (``generator``, ``patch_generator``: uint8 tensors; ``epoch``: the
        subject sampler's) and ``handed_out`` (patches of that pass handed out so far)."""
        if self._handed_out >= self._pass_length:  # between passes: nothing to re-draw
            return {"pass_start": self._snapshot(), "handed_out": 0}
        return {"pass_start": self._pass_start, "handed_out": self._handed_out + self._replay}

    def load_state_dict(self, state: dict) -> None:
        if self._handed_out or self.patches_list:
            raise RuntimeError("SeededQueue.load_state_dict: restore a queue before drawing from it")
        start = state["pass_start"]
        self.generator.set_state(start["generator"])
        self.patch_generator.set_state(start["patch_generator"])
        self.subject_sampler.epoch = int(start["epoch"])
        self._pass_start = {key: start[key] for key in ("generator", "patch_generator", "epoch")}
        self._replay = int(state["handed_out"])


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

    ``centre_jitter`` (voxels) shifts every patch by a uniform offset in ``[-j, j]`` per
    axis (clipped to the volume; ``j`` at most ``(min(patch_size) - 1) // 2``, so the drawn
    voxel always stays inside the patch), so that it lands anywhere in the patch's central
    region rather than always at its centre, as nnU-Net's foreground oversampling does.
    Without it a network can learn "the lesion is in the middle of the patch", a cue that
    sliding-window inference does not have.

    ``balance_components``: the centre of a patch drawn for a non-zero label value is a voxel
    of one of that value's connected components (26-connected, as the ISLES'22 lesion-wise
    metrics count lesions) chosen uniformly, so that a 10-voxel lesion is as often a patch
    centre as a 1000-voxel one; off, each voxel is equally likely (``tio.LabelSampler``) and
    a subject's large lesions take almost all lesion-centred patches. Components are those
    of the region where a patch centre fits (a lesion cut by its edge counts as its parts).
    """

    def __init__(self, patch_size, label_name=None, label_probabilities=None,
                 centre_jitter: int = 0, balance_components: bool = False) -> None:
        super().__init__(patch_size, label_name=label_name, label_probabilities=label_probabilities)
        most = int((min(self.patch_size) - 1) // 2)  # the drawn voxel stays inside the patch
        if not 0 <= centre_jitter <= most:
            raise ValueError(f"centre_jitter={centre_jitter} must be in [0, {most}] voxels for "
                             f"patch size {tuple(int(p) for p in self.patch_size)}")
        self.centre_jitter = int(centre_jitter)
        self.balance_components = bool(balance_components)

    #: Values covering at least this fraction of the region are drawn by rejection.
    REJECTION_FRACTION = 0.05

    def __call__(self, subject: tio.Subject, num_patches: int | None = None):
        """A generator of ``num_patches`` patches of ``subject`` (endless if None), each a
        ``tio.Subject`` of ``patch_size`` voxels with ``tio.LOCATION`` (6,) = start + end."""
        label = self.get_probability_map_image(subject).data
        if self.label_probabilities_dict is None or label.shape[0] != 1:
            if self.centre_jitter or self.balance_components:
                raise ValueError("centre_jitter and balance_components need label_probabilities "
                                 "and a one-channel label map")
            return super().__call__(subject, num_patches)
        subject.check_consistent_space()
        if np.any(self.patch_size > subject.spatial_shape):
            raise RuntimeError(f"Patch size {tuple(int(p) for p in self.patch_size)} cannot be "
                               f"larger than image size {tuple(subject.spatial_shape)}")
        return self._draw_patches(subject, label, num_patches)

    def _draw_patches(self, subject: tio.Subject, label: torch.Tensor, num_patches: int | None):
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
        components: dict[int, list[torch.Tensor]] = {}
        left = num_patches
        while left is None or left > 0:
            draw = float(torch.rand(1))  # torch RNG: SeededQueue seeds it at each refill
            value = present[min(int(np.searchsorted(cumulative, draw, side="right")), len(present) - 1)]
            if self.balance_components and value != 0:
                if value not in components:
                    components[value] = _components(region == value)
                chosen = components[value][int(torch.randint(len(components[value]), (1,)))]
                ini = chosen[int(torch.randint(len(chosen), (1,)))].tolist()
            elif counts[value] >= self.REJECTION_FRACTION * region.numel():
                ini = self._draw_by_rejection(region, value)
            else:
                if value not in voxels:
                    voxels[value] = torch.nonzero(region == value)
                ini = voxels[value][int(torch.randint(len(voxels[value]), (1,)))].tolist()
            if self.centre_jitter:
                shift = torch.randint(-self.centre_jitter, self.centre_jitter + 1, (3,))
                ini = [min(max(int(i + d), 0), n - 1) for i, d, n in zip(ini, shift, region.shape)]
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


def _components(mask: torch.Tensor) -> list[torch.Tensor]:
    """The voxel indices ``(n_k, 3)`` of each 26-connected component of a 3-D bool mask."""
    instances, _ = label_components(mask.numpy())
    return [torch.from_numpy(np.stack(index, axis=1))
            for index in ndimage.value_indices(instances, ignore_value=0).values()]


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
