"""``cogimg leaderboard RUNS_DIR``: rank the runs under a folder (Markdown, CSV, LaTeX, HTML)."""

from __future__ import annotations

from cogimg.commands import add_stage_argument

HELP = "rank the run directories under RUNS_DIR: mean ± std over seeds, bootstrap 95% CIs (md, csv, tex, html)"


def add_arguments(parser) -> None:
    parser.add_argument("runs_dir", help="folder searched recursively for run directories (manifest.json)")
    parser.add_argument("--out", default=None, help="output folder (default: RUNS_DIR)")
    add_stage_argument(parser)
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")


def run(args) -> int:
    import sys

    from cogimg.tracking.leaderboard import find_runs, leaderboard
    from cogimg.tracking.tables import to_markdown, write_leaderboard

    runs, skipped = find_runs(args.runs_dir, stage=args.stage)
    for folder, reason in skipped:
        print(f"skipped {folder}: {reason}", file=sys.stderr)
    if not runs:
        print(f"no finished run directory under {args.runs_dir}", file=sys.stderr)
        return 1
    table = leaderboard(runs, n_boot=args.n_boot)
    written = write_leaderboard(table, args.out or args.runs_dir, stage=args.stage)
    print(to_markdown(table, args.stage))
    from cogimg.tracking.study_stats import comparisons_markdown, write_study_tables

    comparisons, paths = write_study_tables(args.runs_dir, args.out or args.runs_dir)  # study.yaml
    if comparisons is not None:
        print(comparisons_markdown(comparisons))
    print("wrote " + ", ".join(str(p) for p in [*written.values(), *paths.values()]))
    return 0
