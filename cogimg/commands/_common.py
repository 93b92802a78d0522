"""The convention every ``cogimg`` plain subcommand follows: flags and exit codes.

Flags: ``--out`` (output folder or file), ``--overwrite`` (replace existing outputs),
``--n-folds`` (cross-validation folds).

Exit codes (one contract for every command):

- ``0`` ok;
- ``1`` some inputs failed and were listed: input data that failed validation (each problem
  named on stderr or in the command's summary), a run that failed; outputs of the other
  inputs are written;
- ``2`` usage, nothing run: bad, missing or conflicting arguments (argparse exits 2 on its
  own), and arguments naming something that cannot be used: a path that does not exist, a
  checkpoint or config that cannot be read or holds unknown values, an output in the way;
- ``3`` flagged: every input processed, at least one flagged (``cogimg clinical``: out of
  distribution).

A command reports a problem by raising :class:`UsageError` or :class:`DataError`; library
exceptions are read the same way (:data:`NOT_RUN_EXCEPTIONS` → 2, :data:`DATA_EXCEPTIONS` → 1).
:func:`run_command` prints it as one line on stderr, ``cogimg <command>: error: <message>``,
with no traceback (``cogimg --debug …`` or ``COGIMG_TRACEBACK=1`` shows it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from cogimg.errors import UnusableFileError

EXIT_OK, EXIT_DATA, EXIT_USAGE, EXIT_FLAGGED = 0, 1, 2, 3

#: library exceptions about what an argument names (a path, a checkpoint, a config): exit 2
NOT_RUN_EXCEPTIONS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                      PermissionError, UnusableFileError)
#: exceptions read as problems of the data or the run (exit 1); anything else is a bug
DATA_EXCEPTIONS = (OSError, ValueError, KeyError)


class UsageError(Exception):
    """Arguments that cannot be used (bad, missing, conflicting, naming nothing usable): exit 2."""


class DataError(Exception):
    """Input data that failed, or a failed run (the message names the file or key): exit 1."""


def run_command(name: str, func: Callable[[], int | None]) -> int:
    """Call ``func`` (a command's body) and map what it raises to an exit code and one line.

    Returns ``func``'s exit code (``None`` = 0), :data:`EXIT_USAGE` for a :class:`UsageError`
    or an argument-file error (module docstring) and :data:`EXIT_DATA` for a :class:`DataError`
    or one of :data:`DATA_EXCEPTIONS`.
    """
    try:
        return int(func() or 0)
    except (UsageError, DataError, *DATA_EXCEPTIONS) as exc:
        code = EXIT_USAGE if isinstance(exc, (UsageError, *NOT_RUN_EXCEPTIONS)) else EXIT_DATA
        return _fail(name, exc, code)


def _fail(name: str, exc: BaseException, code: int) -> int:
    if os.environ.get("COGIMG_TRACEBACK"):
        raise exc
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(message).split()) or type(exc).__name__
    print(f"cogimg {name}: error: {text}", file=sys.stderr)
    return code
