"""The convention every ``cogimg`` plain subcommand follows: flags and exit codes.

Flags: ``--out`` (output folder or file), ``--overwrite`` (replace existing outputs),
``--n-folds`` (cross-validation folds).

Exit codes: ``0`` ok; ``1`` data or run problem (bad input data, a failed run);
``2`` usage error (bad or missing arguments, conflicting flags — argparse exits 2 on its own
errors). A command reports a problem by raising :class:`UsageError` or :class:`DataError`
(or a plain ``OSError`` / ``ValueError`` from the library, read as a data problem);
:func:`run_command` prints it as one line on stderr, ``cogimg <command>: error: <message>``,
with no traceback (``COGIMG_TRACEBACK=1`` shows it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2

#: exceptions read as problems of the data or the run (exit 1); anything else is a bug
DATA_EXCEPTIONS = (OSError, ValueError, KeyError)


class UsageError(Exception):
    """Bad, missing or conflicting arguments: exit 2."""


class DataError(Exception):
    """Bad input data or a failed run (the message names the file or key): exit 1."""


def run_command(name: str, func: Callable[[], int | None]) -> int:
    """Call ``func`` (a command's body) and map what it raises to an exit code and one line.

    Returns ``func``'s exit code (``None`` = 0), :data:`EXIT_USAGE` for a :class:`UsageError`
    and :data:`EXIT_DATA` for a :class:`DataError` or one of :data:`DATA_EXCEPTIONS`.
    """
    try:
        return int(func() or 0)
    except UsageError as exc:
        return _fail(name, exc, EXIT_USAGE)
    except (DataError, *DATA_EXCEPTIONS) as exc:
        return _fail(name, exc, EXIT_DATA)


def _fail(name: str, exc: BaseException, code: int) -> int:
    if os.environ.get("COGIMG_TRACEBACK"):
        raise exc
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(message).split()) or type(exc).__name__
    print(f"cogimg {name}: error: {text}", file=sys.stderr)
    return code
