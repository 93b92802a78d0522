"""Data-pipeline benchmark: patches/second from raw .nii.gz vs. from the preprocessed cache.

Issue check (cogimg issue 3): prints patches/second for (a) TorchIO reading the .nii.gz and
running the preprocessing (canonical, resample, normalise) every time and (b) reading the
cache, same patch size, in one run, and their ratio — once without random augmentation and
once with the default augmentation preset. Target: (b) ≥ 10× (a) without augmentation; with
augmentation, the Queue must not be the bottleneck of a small 3D U-Net training step on
2 CPU cores (both times are printed).

Data: a stroke-like cohort generated here from the MNI152 2 mm template and tissue maps that
nilearn ships (99 × 117 × 95 voxels): DWI-like and ADC-like images and a lesion mask, written
as LAS .nii.gz; the ADC sits on a thick-slice 2 × 2 × 4 mm grid, as clinical scans often do,
so the preprocessing really resamples. Both pipelines use the datamodule's seeded ``tio.Queue``
(label sampler, ``--samples-per-volume``, ``--patch``, same seed, hence the same patches and
augmentation draws) in the main process with one thread, so the ratio compares volume loading
+ preprocessing; it is shown with TorchIO's ``LabelSampler`` and with cogimg's
``LabelPatchSampler`` (same centre distribution, no whole-volume copy per patch), which the
datamodule uses.

The training comparison: time to draw one batch from :class:`PatchDataModule`'s queue with
the default segmentation augmentation vs. one optimizer step of MONAI
``UNet(3, 2, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)`` on a batch
of the same size, then the two together (queue loading in ``--workers`` processes while the
main process trains), which is what a training epoch costs. The U-Net step runs on
``--device`` (default: CUDA when available) with ``--threads`` torch threads.

Run: ``.venv/bin/python benchmarks/data_pipeline.py`` (several minutes on 2 busy CPU cores);
the numbers go to ``results/data_pipeline.json``. ``--quick`` (2 subjects, 32^3 patches, one
repeat) checks that in under a minute and writes ``results/data_pipeline_quick.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torchio as tio
from _common import write_result


def make_cohort(root: Path, n_subjects: int, seed: int = 0) -> Path:
    """Write ``n_subjects`` stroke-like subjects (dwi, adc, lesion mask) as a BIDS tree."""
    from nilearn.datasets import (
        load_mni152_brain_mask,
        load_mni152_gm_template,
        load_mni152_wm_template,
    )

    rng = np.random.default_rng(seed)
    mask_img = load_mni152_brain_mask(resolution=2)
    brain = np.asarray(mask_img.dataobj) > 0
    gm = np.asarray(load_mni152_gm_template(resolution=2).dataobj, dtype=np.float32)
    wm = np.asarray(load_mni152_wm_template(resolution=2).dataobj, dtype=np.float32)
    csf = np.clip(brain - gm - wm, 0, 1)
    # LAS storage (x flipped), like ISLES'22: the preprocessing has to reorient.
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = (brain.shape[0] - 1)
    las = mask_img.affine @ flip
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in brain.shape], indexing="ij"))
    inside = np.argwhere(brain)
    rows = ["participant_id\tdiagnosis\tsite\tage\tsex"]
    for i in range(n_subjects):
        pid = f"sub-{i:03d}"
        centre = inside[rng.integers(len(inside))]
        radii = rng.uniform(3, 8, 3)
        lesion = (((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1
        lesion &= brain
        noise = rng.normal(0, 1, brain.shape).astype(np.float32)
        dwi = (80 * gm + 60 * wm + 20 * csf) * (1 + 1.5 * lesion) + 4 * noise * brain
        adc = (800 * gm + 700 * wm + 3000 * csf) * (1 - 0.5 * lesion) + 40 * noise * brain
        folder, deriv = root / pid / "dwi", root / "derivatives" / "lesions" / pid / "dwi"
        folder.mkdir(parents=True, exist_ok=True)
        deriv.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(dwi[::-1].astype(np.float32), las), folder / f"{pid}_dwi.nii.gz")
        thick = adc[::-1, :, ::2].astype(np.float32)  # 2 × 2 × 4 mm
        nib.save(nib.Nifti1Image(thick, las @ np.diag([1, 1, 2.0, 1])), folder / f"{pid}_adc.nii.gz")
        nib.save(nib.Nifti1Image(lesion[::-1].astype(np.uint8), las), deriv / f"{pid}_msk.nii.gz")
        rows.append(f"{pid}\tstroke\tA\t{60 + i}\t{'MF'[i % 2]}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


class PreprocessThenAugment:
    """(a)'s transform: preprocessing under a forked RNG (TorchIO draws a number per transform
    call), so that (a) and (b) get the same augmentation parameters for every subject."""

    def __init__(self, preprocess, augment):
        self.preprocess, self.augment = preprocess, augment

    def __call__(self, subject):
        with torch.random.fork_rng(devices=[]):
            subject = self.preprocess(subject)
        return self.augment(subject)


def patches_per_second(dataset, args, sampler_cls, repeats: int | None = None) -> float:
    """Patches/second of one epoch (subjects × samples/volume) through the datamodule's
    seeded ``tio.Queue``: the same seed gives both pipelines the same subjects, patches and
    augmentation draws. Best of ``repeats`` epochs (other processes share the cores)."""
    from cogimg.data.sampling import SeededQueue

    sampler = sampler_cls(args.patch, label_name="lesions_msk", label_probabilities={0: 0.5, 1: 0.5})
    n = len(dataset) * args.samples_per_volume
    best = 0.0
    for _ in range(repeats or args.repeats):
        queue = SeededQueue(dataset, args.queue_length, args.samples_per_volume, sampler, seed=0)
        start = time.perf_counter()
        for i in range(n):
            queue[i]
        best = max(best, n / (time.perf_counter() - start))
    return best


def training_comparison(dm, args) -> dict:
    """Queue time per batch vs. U-Net step time, then both together in a training loop."""
    from monai.networks.nets import UNet

    device = torch.device(args.device)
    torch.set_num_threads(1)
    loader = dm.train_dataloader()
    start = time.perf_counter()
    batches = [b for _, b in zip(range(args.steps), loader)]
    queue_s = (time.perf_counter() - start) / len(batches)

    net = UNet(3, 2, 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2).to(device)
    optimizer = torch.optim.Adam(net.parameters(), 1e-3)

    def step(batch):
        optimizer.zero_grad()
        image, label = batch["image"].to(device), batch["label"][:, 0].to(device)
        loss = torch.nn.functional.cross_entropy(net(image), label)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step_s = {}
    for threads in sorted({1, args.threads}, reverse=True):
        torch.set_num_threads(threads)
        step(batches[0])  # warm-up (allocations)
        times = []
        for batch in batches:
            start = time.perf_counter()
            step(batch)
            times.append(time.perf_counter() - start)
        step_s[threads] = float(np.median(times))  # robust to bursts of other processes

    print(f"queue: one batch of {args.batch_size} patches, mean over {args.steps} (1 thread) "
          f"{queue_s * 1000:8.0f} ms")
    for threads, seconds in step_s.items():
        print(f"U-Net step (forward + backward + Adam), median, {threads} thread(s) "
              f"{seconds * 1000:8.0f} ms")
    verdict = "not the bottleneck" if queue_s < step_s[args.threads] else "THE BOTTLENECK"
    print(f"queue / step ({args.threads} threads) = {queue_s / step_s[args.threads]:.2f} "
          f"→ the queue is {verdict}")
    print("training loop (queue + step), mean ms per step over the epoch:")
    result = {"queue_batch_s": queue_s, "unet_step_s_by_threads": step_s, "loop_step_s": []}
    for workers, threads in ((0, args.threads), (1, 1), (1, args.threads)):
        torch.set_num_threads(threads)
        dm.num_workers = workers
        start = time.perf_counter()
        for _, batch in zip(range(args.steps), dm.train_dataloader()):
            step(batch)
        loop_s = (time.perf_counter() - start) / args.steps
        print(f"  queue workers {workers}, training threads {threads}: {loop_s * 1000:8.0f} ms "
              f"({loop_s / step_s[threads]:.2f}× the bare step)")
        result["loop_step_s"].append({"queue_workers": workers, "threads": threads, "s": loop_s})
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64, help="cubic patch size in voxels")
    parser.add_argument("--samples-per-volume", type=int, default=8)
    parser.add_argument("--queue-length", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps timed (default: one epoch, subjects × samples/volume / batch)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of the training step (the target is 2 cores)")
    parser.add_argument("--device", default="auto",
                        help="device of the U-Net step: cpu, cuda or auto (CUDA when available)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5, help="epochs per patches/second (best)")
    parser.add_argument("--quick", action="store_true",
                        help="2 subjects, 32^3 patches, 2 per volume, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.subjects, args.patch, args.samples_per_volume = 2, 32, 2
        args.queue_length, args.repeats = 4, 1
    # Data loading runs single-threaded, as in DataLoader workers (PyTorch sets 1 thread
    # there): intra-op threads on a busy machine make small tensor ops much slower.
    torch.set_num_threads(1)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.patch = (args.patch,) * 3
    args.steps = args.steps or args.subjects * args.samples_per_volume // args.batch_size

    from cogimg.data.augmentation import augmentation
    from cogimg.data.bids import load_dataset
    from cogimg.data.cache import VolumeCache
    from cogimg.data.datamodules import PatchDataModule
    from cogimg.data.sampling import LabelPatchSampler, SeededSubjectsDataset
    from cogimg.data.transforms import PreprocessingConfig

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        root = make_cohort(work / "bids", args.subjects)
        subjects = load_dataset(root, required_modalities=("dwi", "adc")).subjects
        config = PreprocessingConfig(spacing_mm=2.0, reference="dwi")
        shape = subjects[0].dwi.spatial_shape
        print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at start "
              "(other processes on the cores make every time longer and noisier)")
        print(f"cohort: {len(subjects)} subjects, dwi {shape} at 2 mm LAS, adc 2×2×4 mm, lesion mask; "
              f"patch {args.patch}, samples/volume {args.samples_per_volume}, "
              f"data loading in 1 thread, training step in {args.threads}")

        start = time.perf_counter()
        cache = VolumeCache(work / "cache" / "volumes", config)
        cached = cache.warm(subjects)
        result = {"settings": {k: v for k, v in vars(args).items() if k != "workdir"},
                  "cache_warm_s": time.perf_counter() - start, "patches_per_s": []}
        print(f"cache warm-up (one-time): {result['cache_warm_s']:.1f} s "
              f"for {len(subjects)} subjects")

        print("\n== patches/second: (a) .nii.gz + preprocessing every time vs (b) cache ==")
        print(f"{'augmentation':<14}{'sampler':<20}{'(a) raw':>10}{'(b) cache':>11}{'ratio b/a':>11}")
        for strength in ("none", "default"):
            aug = augmentation("segmentation", strength)
            for sampler_cls in (tio.LabelSampler, LabelPatchSampler):
                if sampler_cls is tio.LabelSampler and strength != "none":
                    continue  # the stock sampler is shown once, for reference
                # Same dataset class for both: raw subjects are read by TorchIO from .nii.gz.
                raw_data = SeededSubjectsDataset(subjects, transform=PreprocessThenAugment(config.build(), aug))
                raw = patches_per_second(raw_data, args, sampler_cls)
                fast = patches_per_second(SeededSubjectsDataset(cached, transform=aug), args, sampler_cls)
                name = "tio.LabelSampler" if sampler_cls is tio.LabelSampler else "LabelPatchSampler"
                print(f"{strength:<14}{name:<20}{raw:>10.1f}{fast:>11.1f}{fast / raw:>10.1f}×")
                result["patches_per_s"].append({"augmentation": strength, "sampler": name,
                                                "raw": raw, "cache": fast})

        print("\n== default augmentation: queue vs. one 3D U-Net training step ==")
        dm = PatchDataModule(root, "stroke", cache_dir=work / "cache", patch_size=args.patch,
                             samples_per_volume=args.samples_per_volume, queue_length=args.queue_length,
                             batch_size=args.batch_size, num_workers=0, augmentation="default",
                             n_folds=2, test_fraction=0.0)
        dm.subjects = {"train": cached, "val": [], "test": []}  # every subject, already cached
        dm.label_key = "lesions_msk"
        result["training"] = training_comparison(dm, args)
    rows = result["patches_per_s"]
    plain = next(r for r in rows if r["augmentation"] == "none" and r["sampler"] == "LabelPatchSampler")
    training = result["training"]
    write_result("data_pipeline_quick" if args.quick else "data_pipeline", result,
                 device=args.device,
                 headline={"cache vs raw patches/s, no augmentation": plain["cache"] / plain["raw"],
                           "queue batch / U-Net step": training["queue_batch_s"]
                           / training["unet_step_s_by_threads"][args.threads]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
