"""``cogimg outcome``: cross-validated lesion → outcome regression from an experiment YAML.

    cogimg outcome --config experiments/outcome/svr.yaml [--out runs/outcome/svr]
    cogimg fit --config experiments/outcome/svr.yaml [--out …]   # the same (its kind: outcome)

The YAML format and the cross-validation are :mod:`cogimg.paradigms.outcome`'s; the run
directory (readable by ``cogimg leaderboard``) is :mod:`cogimg.tracking.outcome`'s.
"""

from __future__ import annotations

import argparse

HELP = "cross-validated lesion → clinical outcome regression (SVR, ridge, boosting, 3D CNN)"

#: command-line option -> (config section, key) it overrides
OVERRIDES = {"mask_dir": ("data", "mask_dir"), "scores": ("data", "scores"),
             "atlas": ("data", "atlas"), "split": ("cv", "split"), "n_folds": ("cv", "n_folds")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (experiments/outcome/…)")
    parser.add_argument("--out", help="run directory (default: the config's out)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run directory")
    parser.add_argument("--mask-dir", help="override data.mask_dir")
    parser.add_argument("--scores", help="override data.scores")
    parser.add_argument("--atlas", help="override data.atlas")
    parser.add_argument("--split", help="override cv.split (split JSON, created if absent)")
    parser.add_argument("--n-folds", type=int, help="override cv.n_folds")
    parser.add_argument("--max-epochs", type=int,
                        help="override the CNN's max_epochs (ignored by classical models)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cogimg.commands._common import UsageError
    from cogimg.paradigms.outcome import format_row, load_config
    from cogimg.tracking.outcome import run_outcome_experiment

    if args.n_folds is not None and args.n_folds < 2:
        raise UsageError(f"--n-folds {args.n_folds}: need at least 2 folds")
    config = load_config(args.config)
    for key, (section, field) in OVERRIDES.items():
        if getattr(args, key) is not None:
            config[section][field] = getattr(args, key)
    if args.max_epochs is not None and config["model"]["name"] == "cnn":
        config["model"].setdefault("params", {})["max_epochs"] = args.max_epochs
    if args.out:
        config["out"] = args.out
    result = run_outcome_experiment(config, overwrite=args.overwrite)
    print(format_row(Path(args.config).stem, result))
    return 0
