"""How long does one classification epoch take with the default 3D CNN?

Target (cogimg issue 6): "Classification of 120 subjects at 2 mm trains one epoch in ≤ 60 s on
2 CPU cores with the default 3D CNN, peak RSS ≤ 4 GB".

Setup: a synthetic AD cohort generated at 2 mm (``cogimg synth --diseases ad``; 130 subjects
so that the split has 120 training subjects plus 5 validation and 5 test subjects), read by
``VolumeDataModule`` with its defaults (resampled to 4 mm, cropped to the brain, 48 × 56 × 48,
batch 8, light augmentation, ``--workers`` loader processes) and trained by
``ClassificationTask`` with its defaults (``resnet10_3d``: MONAI ResNet-10, widths
(16, 32, 64, 128), stride-2 stem). The one-time preprocessing into the cache is timed
separately. Three training epochs run (the first pays for worker start-up and oneDNN
warm-up); all three are printed, with the peak memory of the whole process tree (PSS, as
in every run's manifest: :class:`cogimg.tracking.provenance.PeakMemory`, sampled every 100 ms).

For scale, the same script times a few training steps of MONAI's published ResNet-10
(widths 64…512, stride-1 stem; what ``monai.networks.nets.resnet10`` builds) and of the
published widths with cogimg's stride-2 stem, at the same batch, and extrapolates their
epoch time.

Run: ``.venv/bin/python benchmarks/cls_epoch_time.py [--data DIR]`` (a few minutes; without
``--data`` it generates the cohort first). The numbers go to ``results/cls_epoch_time.json``;
``--quick`` (10 training subjects, one epoch, no published-size timing) checks that in
under a minute and writes ``results/cls_epoch_time_quick.json``.

The device (``--device``, default: CUDA when available) and the torch threads
(``--threads``) come from the command line; the epoch times, peak memory and per-step times
are in the result file, and ``benchmarks/render_results.py`` renders them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import psutil
from _common import add_runtime_args, apply_runtime, lightning_accelerator, write_result

TARGET_SECONDS = 60.0
TARGET_RSS_GB = 4.0


def write_split(root: Path, out: Path, n_train: int) -> Path:
    """A one-fold split file: the first ``n_train`` participants train, the rest val/test."""
    from cogimg.data.participants import participants_hash, read_participants
    from cogimg.data.splits import Split, save_split

    table = read_participants(root / "participants.tsv")
    ids = sorted(table.index.astype(str))  # indexed by participant_id
    if len(ids) < n_train + 2:
        raise SystemExit(f"{root} has {len(ids)} participants; need {n_train} + 2")
    rest = ids[n_train:]
    split = Split(kind="kfold", folds=[{"name": "fold0", "train": ids[:n_train],
                                        "val": rest[: len(rest) // 2]}],
                  test=rest[len(rest) // 2:], seed=0, stratify=None,
                  participants_hash=participants_hash(table))
    save_split(split, out, overwrite=True)
    return out


def step_time(model_kwargs: dict, batch: int, shape, device, repeats: int = 3) -> float:
    """Best seconds per training step (forward, backward, AdamW) on random input."""
    import torch

    from cogimg import models
    from cogimg.models import classification  # noqa: F401

    net = models.get("resnet10_3d", in_channels=1, num_classes=3, input_shape=shape,
                     **model_kwargs).to(device)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.randn(batch, 1, *shape, device=device)
    y = torch.randint(0, 3, (batch,), device=device)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="existing synthetic AD cohort (2 mm)")
    parser.add_argument("--train-subjects", type=int, default=120)
    parser.add_argument("--workers", type=int, default=1, help="datamodule loader processes")
    parser.add_argument("--skip-published", action="store_true", help="skip the published-width timing")
    parser.add_argument("--quick", action="store_true",
                        help="10 training subjects, one epoch, no published-width timing")
    add_runtime_args(parser)
    args = parser.parse_args()
    device = apply_runtime(args)
    if args.quick:
        args.train_subjects, args.skip_published = 10, True

    import lightning as L
    import torch

    from cogimg.data.datamodules import VolumeDataModule
    from cogimg.models.profiling import count_parameters
    from cogimg.tasks.classification import ClassificationTask
    from cogimg.tracking.provenance import PeakMemory

    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="cls_epoch_"))
    root = args.data
    if root is None:
        from cogimg.data.synth import generate_cohort

        start = time.perf_counter()
        root = generate_cohort(work / "synth", args.train_subjects + 10, seed=0, spacing_mm=2.0,
                               diseases="ad", workers=2, progress=False)
        print(f"generated {args.train_subjects + 10} subjects at 2 mm in {time.perf_counter() - start:.0f} s")
    split = write_split(root, work / "split.json", args.train_subjects)
    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {psutil.cpu_count()}, "
          f"load average: {psutil.getloadavg()[0]:.1f}")

    memory = PeakMemory(interval_s=0.1).start()
    dm = VolumeDataModule(root, preset="ad", split_file=split, cache_dir=work / "cache",
                          num_workers=args.workers)
    start = time.perf_counter()
    dm.setup("fit")
    print(f"one-time preprocessing into the cache ({len(dm.subjects['train'])} train + "
          f"{len(dm.subjects['val'])} val + {len(dm.subjects['test'])} test subjects): "
          f"{time.perf_counter() - start:.1f} s")
    L.seed_everything(0)
    task = ClassificationTask(classes=("CN", "MCI", "AD"))
    epochs: list[float] = []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            epochs.append(time.perf_counter() - self.start)

    trainer = L.Trainer(max_epochs=1 if args.quick else 3, accelerator=lightning_accelerator(device),
                        devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[EpochTimer()])
    trainer.fit(task, datamodule=dm)
    peak_gb = memory.stop()["peak_memory_gb"]
    batches = len(dm.train_dataloader())
    n = len(dm.subjects["train"])
    print(f"\ndefault 3D CNN (resnet10_3d, widths 16-128, stride-2 stem, "
          f"{count_parameters(task) / 1e6:.2f} M params), {n} subjects, "
          f"{batches} batches of {dm.batch_size} at 4 mm {tuple(dm.config.target_shape)}:")
    for i, seconds in enumerate(epochs, 1):
        print(f"  epoch {i}: {seconds:6.1f} s  ({seconds / n * 1000:.0f} ms/subject)   "
              f"target ≤ {TARGET_SECONDS:.0f} s: {'PASS' if seconds <= TARGET_SECONDS else 'FAIL'}")
    print(f"  peak memory (PSS) of the process tree: {peak_gb:.2f} GiB   target ≤ {TARGET_RSS_GB:.0f} GiB: "
          f"{'PASS' if peak_gb <= TARGET_RSS_GB else 'FAIL'}")

    result = {"settings": {"train_subjects": n, "workers": args.workers, "batch": dm.batch_size,
                           "input_shape": list(dm.config.target_shape), "quick": args.quick},
              "params_m": count_parameters(task) / 1e6, "epoch_s": epochs,
              "peak_memory_gib": peak_gb, "step_s": {}}
    if not args.skip_published:
        shape, batch = tuple(dm.config.target_shape), dm.batch_size
        default = step_time({}, batch, shape, device)
        result["step_s"]["cogimg default (16-128, stride-2 stem)"] = default
        print(f"\nper training step at batch {batch} × {shape} (random input, best of 3):")
        print(f"  cogimg default  (16-128, stride-2 stem): {default:6.2f} s  → {default * batches:6.1f} s/epoch")
        for label, kw in (("published widths, stride-2 stem", {"block_inplanes": (64, 128, 256, 512)}),
                          ("MONAI resnet10 (64-512, stride 1)", {"block_inplanes": (64, 128, 256, 512),
                                                                  "conv1_stride": 1})):
            seconds = step_time(kw, batch, shape, device)
            result["step_s"][label] = seconds
            print(f"  {label:34s}: {seconds:6.2f} s  → {seconds * batches:6.1f} s/epoch  "
                  f"({seconds / default:.1f}× the default)")
    write_result("cls_epoch_time_quick" if args.quick else "cls_epoch_time", result,
                 device=args.device,
                 headline={"last epoch, s": epochs[-1], "peak memory, GiB": peak_gb,
                           "target epoch, s": TARGET_SECONDS})


if __name__ == "__main__":
    main()
