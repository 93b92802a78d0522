"""``cogimg demo``: the main job under its first name — the same code as
``cogimg benchmark experiments/quickstart.yaml`` (synthesise → train and compare →
leaderboard → figures → report)."""

from __future__ import annotations

HELP = "main job (= cogimg benchmark experiments/quickstart.yaml): cohort, seeded comparison, leaderboard, figures, report"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--benchmark", default=None, help="benchmark file (default experiments/quickstart.yaml)")
    parser.add_argument("--full", action="store_true", help="the file's `full` preset (larger, for a GPU)")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis (default 2)")


def run(args) -> int:
    from cogimg.tracking.benchmark import default_benchmark_file, run_benchmark

    run_benchmark(args.benchmark or default_benchmark_file(), args.out, full=args.full, workers=args.workers)
    return 0
