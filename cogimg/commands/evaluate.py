"""``cogimg evaluate --protocol leave-site-out --config EXPERIMENT.yaml``: robustness across sites.

For every site: train on the others, score in-site (held-out subjects of the training
sites), out-of-site (the held-out site) and out-of-site after each adaptation variant
(:mod:`cogimg.paradigms.adaptation.protocol`), with 95 % bootstrap intervals. Writes
``<out>/lso_results.csv`` (one row per site, variant and scope), ``<out>/lso_summary.csv``
(means over sites and the share of the in→out drop each variant recovers) and
``<out>/lso_subjects.csv`` (per subject) with :mod:`cogimg.tracking.leave_site_out`, and
prints the first two. Result files of an earlier run are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate an experiment across sites (leave-site-out: in-site vs out-of-site vs adapted)"
PROTOCOLS = ("leave-site-out",)
#: = protocol.VARIANTS (kept import-free for --help; a test checks they agree)
VARIANTS = ("histstd", "dann", "dann_mt", "coral", "mmd", "adabn", "tent")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, required=True,
                        help="leave-site-out: one fold per site of participants.tsv")
    parser.add_argument("--config", required=True, type=Path, metavar="YAML",
                        help="experiment (LightningCLI YAML: model/data/trainer)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default runs/<config name>/leave-site-out)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the result files of an earlier run in --out")
    parser.add_argument("--variants", type=_csv_list, default=list(VARIANTS), metavar="V1,V2",
                        help=f"adaptation variants, comma-separated, from {','.join(VARIANTS)} "
                             "('none' = baseline only; default all)")
    parser.add_argument("--sites", type=_csv_list, metavar="S1,S2",
                        help="held-out sites to run (default every site)")
    parser.add_argument("--data-root", type=Path, help="override data.init_args.data_root")
    parser.add_argument("--max-epochs", type=int, help="override trainer.max_epochs")
    parser.add_argument("--adaptation-weight", type=float, default=0.1,
                        help="weight of the DANN/CORAL/MMD loss (default 0.1)")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of the training sites' subjects held out as the in-site set (default 0.2)")
    parser.add_argument("--tent-steps", type=int, default=1, help="TENT passes over the held-out site")
    parser.add_argument("--tent-lr", type=float, default=1e-3, help="TENT learning rate")


def run(args: argparse.Namespace) -> int:
    from cogimg.commands._common import UsageError
    from cogimg.paradigms.adaptation.protocol import Experiment, LeaveSiteOut
    from cogimg.tracking.leave_site_out import (
        format_leave_site_out,
        refuse_existing,
        write_leave_site_out,
    )

    variants = [] if args.variants == ["none"] else args.variants
    if unknown := [v for v in variants if v not in VARIANTS]:
        raise UsageError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)} or 'none'")
    experiment = Experiment.from_yaml(args.config)
    if args.data_root is not None:
        experiment.data_args["data_root"] = str(args.data_root)
    if args.max_epochs is not None:
        experiment.trainer_args["max_epochs"] = args.max_epochs
    out = args.out or Path("runs") / args.config.stem / "leave-site-out"
    refuse_existing(out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    protocol = LeaveSiteOut(experiment, out, val_fraction=args.val_fraction,
                            tent_steps=args.tent_steps, tent_lr=args.tent_lr)
    rows = protocol.run(variants, args.sites, adaptation_weight=args.adaptation_weight)
    paths = write_leave_site_out(rows, protocol.subject_rows, out, overwrite=True,
                                 seed=protocol.train_seed)
    print(format_leave_site_out(rows))
    print(f"\nwrote {paths['results']} and {paths['summary']}")
    return 0
