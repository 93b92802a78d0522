"""``cogimg plan DATA_ROOT``: dataset fingerprint → training plan, the nnU-Net way.

Reads the dataset once into ``fingerprint.json`` (:mod:`cogimg.data.fingerprint`), derives
the plan (:mod:`cogimg.models.plan`: target spacing, patch and batch size for a memory
budget, U-Net strides and widths, normalisation, foreground oversampling) and writes
``plan.yaml`` (experiment-config keys: ``cogimg fit --config EXPERIMENT.yaml --config
plan.yaml``) and ``plan.json`` (everything, with the memory figures) into ``--out``.
"""

from __future__ import annotations

import argparse

HELP = "fingerprint a segmentation dataset and plan spacing, patch, batch and U-Net (nnU-Net way)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_root", metavar="DATA_ROOT", help="dataset folder holding participants.tsv")
    parser.add_argument("--out", metavar="DIR", default="plan",
                        help="folder for fingerprint.json, plan.yaml, plan.json (default ./plan)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing plan in --out")
    parser.add_argument("--network", default="dynunet", help="registry network to size: dynunet "
                        "(default) or unet")
    parser.add_argument("--memory-gb", type=float, default=None, metavar="N",
                        help="training memory budget in GiB (default: the GPU's memory, else 8 on CPU)")
    parser.add_argument("--preset", default="stroke", help="disease preset (modalities, label keys)")
    parser.add_argument("--modality", action="append", metavar="KEY", default=None,
                        help="modality key to use (repeat; the first is the reference; default: "
                             "the preset's)")
    parser.add_argument("--workers", type=int, default=None, help="threads reading subjects")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the intensity sample")
    parser.add_argument("--samples", type=int, default=None, metavar="N",
                        help="foreground voxels sampled for the intensity statistics "
                             "(default 10**7, over the whole dataset)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cogimg.commands._common import UsageError
    from cogimg.data.fingerprint import extract_fingerprint, format_fingerprint, write_fingerprint
    from cogimg.diseases import PRESETS
    from cogimg.models.plan import NETWORKS, format_plan, plan_from_fingerprint, write_plan

    if args.network not in NETWORKS:
        raise UsageError(f"--network {args.network}: plannable networks are {list(NETWORKS)}")
    if args.preset not in PRESETS:
        raise UsageError(f"--preset {args.preset}: unknown preset; known: {sorted(PRESETS)}")
    if args.memory_gb is not None and args.memory_gb <= 0:
        raise UsageError(f"--memory-gb {args.memory_gb}: must be positive")
    out = Path(args.out)
    if (out / "plan.yaml").exists() and not args.overwrite:
        raise UsageError(f"{out / 'plan.yaml'} exists; pass --overwrite to replace it")
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples {args.samples}: must be positive")
    sampling = {} if args.samples is None else {"samples": args.samples}
    fingerprint = extract_fingerprint(args.data_root, preset=args.preset, modalities=args.modality,
                                      num_workers=args.workers, seed=args.seed,
                                      progress=not args.no_progress, **sampling)
    out.mkdir(parents=True, exist_ok=True)
    write_fingerprint(fingerprint, out / "fingerprint.json")
    print(format_fingerprint(fingerprint))
    plan = plan_from_fingerprint(fingerprint, network=args.network, memory_gb=args.memory_gb)
    paths = write_plan(plan, out)
    print(format_plan(plan))
    print(f"Wrote {out / 'fingerprint.json'}, {paths[0]}, {paths[1]}")
    return 0
