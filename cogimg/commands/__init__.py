"""Plain (non-Lightning) subcommands of the ``cogimg`` console script.

Each module here defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int`` (the exit code). ``cogimg.cli`` imports a module only when its
subcommand runs, so ``cogimg --help`` stays fast.
"""
