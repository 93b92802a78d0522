"""``cogimg figures RUNS_DIR --out DIR``: paper figures from run directories and Optuna studies."""

from __future__ import annotations

from cogimg.commands import add_stage_argument

HELP = "paper figures (PNG + PDF) from the runs and Optuna studies under RUNS_DIR"


def add_arguments(parser) -> None:
    parser.add_argument("runs_dir", help="folder searched recursively for run directories and study.db files")
    parser.add_argument("--out", default=None, help="output folder (default RUNS_DIR/figures)")
    add_stage_argument(parser)


def run(args) -> int:
    import sys
    from pathlib import Path

    from cogimg.tracking.figure_set import make_figures

    written, skipped = make_figures(args.runs_dir, args.out or Path(args.runs_dir) / "figures", stage=args.stage)
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    for path in written:
        print(f"wrote {path} (+ .pdf)")
    return 0 if written else 1
