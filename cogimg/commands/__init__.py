"""Plain (non-Lightning) subcommands of the ``cogimg`` console script.

Each module here defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). ``cogimg.cli`` imports a module only when its
subcommand runs, so ``cogimg --help`` stays fast.
"""


def add_stage_argument(parser) -> None:
    """``--stage val|test``: which per-subject table of each run directory to score."""
    parser.add_argument("--stage", default="val", choices=("val", "test"),
                        help="score each run's validation (default) or test subjects")
