"""``cogimg benchmark experiments/quickstart.yaml``: the main job (synthesise → train and
compare → leaderboard → figures → report). ``--config FILE`` names the file too, as in
``cogimg fit --config experiments/quickstart.yaml`` (its ``kind: benchmark`` routes it here)."""

from __future__ import annotations

HELP = "main job: synthesise the cohort, train a seeded comparison, write leaderboard, figures and report.html"


def add_arguments(parser) -> None:
    parser.add_argument("benchmark", nargs="?", default=None,
                        help="benchmark file (default experiments/quickstart.yaml)")
    parser.add_argument("--config", metavar="FILE", help="the benchmark file, as an option")
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    parser.add_argument("--full", action="store_true", help="the file's `full` preset (larger, for a GPU)")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis (default 2)")


def run(args) -> int:
    from cogimg.commands._common import UsageError
    from cogimg.tracking.benchmark import default_benchmark_file, run_benchmark

    if args.benchmark and args.config:
        raise UsageError(f"two benchmark files: {args.benchmark} and --config {args.config}")
    path = args.benchmark or args.config or default_benchmark_file()
    run_benchmark(path, args.out, full=args.full, workers=args.workers)
    return 0
