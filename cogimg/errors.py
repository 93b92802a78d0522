"""Exception types shared across layers."""

from __future__ import annotations


class UnusableFileError(ValueError):
    """A file an argument names (checkpoint, weights, config) that cannot be used as it is.

    The message names the file and what is wrong. Commands read it as "nothing run" (exit 2;
    see :mod:`cogimg.commands._common`), unlike problems found in the input data (exit 1).
    """


class ConfigError(UnusableFileError):
    """A YAML config (study, sweep, benchmark, experiment section) with a bad key or value;
    the message names the file and the key."""
