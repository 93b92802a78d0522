"""Plain (non-Lightning) subcommands of the ``cogimg`` console script.

Each module here defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code): it parses, calls the library and prints, nothing else.
``cogimg.cli`` imports a module only when its subcommand runs and calls ``run`` through
:func:`cogimg.commands._common.run_command`, which turns a ``UsageError`` into exit 2 and a
data problem (``DataError``, ``OSError``, ``ValueError``) into exit 1 with one line on stderr.
Flags: ``--out``, ``--overwrite``, ``--n-folds`` (see ``cogimg --help``).
"""


def add_stage_argument(parser) -> None:
    """``--stage val|test``: which per-subject table of each run directory to score."""
    parser.add_argument("--stage", default="val", choices=("val", "test"),
                        help="score each run's validation (default) or test subjects")
