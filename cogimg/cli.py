"""The ``cogimg`` console script.

Two kinds of subcommands share one entry point:

* ``fit | validate | test`` go to :class:`lightning.pytorch.cli.LightningCLI`, configured by
  YAML files (``cogimg fit --config experiments/stroke/seg_unet.yaml``). jsonargparse
  rejects unknown keys with an error that names them. A config with a top-level ``kind:``
  (:data:`cogimg.lightning_cli.KINDS`) runs the plain command of that kind instead:
  ``cogimg fit --config experiments/outcome/svr.yaml --out DIR`` is
  ``cogimg outcome --config experiments/outcome/svr.yaml --out DIR``.
* plain subcommands (``check``, ``split``, ``synth``, …) live in :mod:`cogimg.commands`,
  one module each, imported lazily.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

LIGHTNING_SUBCOMMANDS = {
    "fit": "train a task on a datamodule (LightningCLI)",
    "validate": "evaluate a checkpoint on the validation split (LightningCLI)",
    "test": "evaluate a checkpoint on the test split (LightningCLI)",
}

#: name -> module under cogimg.commands (each defines HELP, add_arguments, run)
PLAIN_SUBCOMMANDS = {
    "check": "check",
    "split": "split",
    "synth": "synth",
    "models": "models",
    "predict": "predict",
    "explain": "explain",
    "evaluate": "evaluate",
    "sweep": "sweep",
    "leaderboard": "leaderboard",
    "figures": "figures",
    "report": "report",
    "benchmark": "benchmark",
    "study": "study",
    "demo": "demo",
    "outcome": "outcome",
    "lsm": "lsm",
    "annotate": "annotate",
    "clinical": "clinical",
    "plan": "plan",
    "postprocess": "postprocess",
}


CONVENTIONS = """\
conventions (every plain command):
  --out PATH     where the command writes (a folder; a file for split, report, check)
  --overwrite    replace outputs that the command would otherwise refuse to replace
  --n-folds K    cross-validation folds (split, outcome)

exit codes (errors: one line on stderr naming the file or key; --debug shows the traceback):
  0  ok
  1  some inputs failed and were listed (bad input data, failed runs); the others written
  2  usage error, nothing run: bad or missing arguments, unknown options, conflicting flags,
     a path that does not exist, a checkpoint or config that cannot be used, outputs in the way
  3  flagged: every input processed, at least one flagged (clinical: out of distribution)

Lightning subcommands take --config FILE.yaml; see `cogimg fit --help`."""


def _plain_module(name: str):
    return importlib.import_module(f"cogimg.commands.{PLAIN_SUBCOMMANDS[name]}")


def _available_plain() -> dict[str, object]:
    """Plain subcommands whose module imports (a missing one is a bug, not a hidden command)."""
    return {name: _plain_module(name) for name in PLAIN_SUBCOMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cogimg",
        description="Brain MRI deep learning for cognitive impairment (stroke, AD, PD).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=CONVENTIONS,
    )
    from cogimg import __version__

    parser.add_argument("--version", action="version", version=f"cogimg {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (before the command)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in LIGHTNING_SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name, module in _available_plain().items():
        p = sub.add_parser(name, help=module.HELP.replace("%", "%%"), description=module.HELP)
        module.add_arguments(p)
    return parser


def run_lightning(argv: list[str]) -> int:
    """Run ``cogimg fit|validate|test ARGS``: LightningCLI, or the plain command that the
    config's top-level ``kind`` names, with the same arguments (``-c`` read as ``--config``)."""
    from cogimg.commands._common import run_command
    from cogimg.lightning_cli import (
        CONFIG_FLAGS,
        refuse_remote_checkpoints,
        routed_command,
        run_lightning_cli,
    )

    routed: list[str | None] = []
    code = run_command(argv[0], lambda: refuse_remote_checkpoints(argv[1:]))
    code = code or run_command(argv[0], lambda: routed.append(routed_command(argv)))
    if code:  # a URL checkpoint, or a kind that cannot be routed: one line, exit 2
        return code
    if routed[0] is not None:
        return run_plain([routed[0], *("--config" if a in CONFIG_FLAGS else a for a in argv[1:])])
    run_lightning_cli(argv)
    return 0


def run_plain(argv: list[str]) -> int:
    """Parse ``argv`` (``[command, …]``, or ``[]``: print the help) and run the plain command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from cogimg.commands._common import run_command

    module = _plain_module(args.command)
    return run_command(args.command, lambda: module.run(args))


def _console_never_fails_on_encoding() -> None:
    """Print characters the console cannot encode (``±``, ``Δ`` on an ASCII locale such as
    ``LC_ALL=POSIX PYTHONUTF8=0``) as backslash escapes instead of crashing the command."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    _console_never_fails_on_encoding()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--debug"]:  # errors keep their traceback, for this call only
        previous = os.environ.get("COGIMG_TRACEBACK")
        os.environ["COGIMG_TRACEBACK"] = "1"
        try:
            return main(argv[1:])
        finally:
            if previous is None:
                del os.environ["COGIMG_TRACEBACK"]
            else:
                os.environ["COGIMG_TRACEBACK"] = previous
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        return run_lightning(argv)
    return run_plain(argv)


if __name__ == "__main__":
    raise SystemExit(main())
