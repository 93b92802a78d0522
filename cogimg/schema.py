"""Typed YAML sections: a dataclass schema checked by jsonargparse, one error naming file and key.

:func:`parse_section` turns a mapping read from a YAML file into an instance of a dataclass
whose field types jsonargparse checks (``int``, ``float | None``, ``Literal[...]``, lists …).
Unknown keys and wrong types are one ``ValueError`` ``"<file>: <key>: <problem>"``; checks that
involve several fields stay with the caller.
"""

from __future__ import annotations

import dataclasses
import re
from argparse import ArgumentError
from pathlib import Path
from typing import Any, TypeVar

from jsonargparse import ArgumentParser

from cogimg.errors import ConfigError

T = TypeVar("T")
_PARSERS: dict[type, ArgumentParser] = {}


def _parser(schema: type) -> ArgumentParser:
    if schema not in _PARSERS:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(schema)
        _PARSERS[schema] = parser
    return _PARSERS[schema]


def parse_section(schema: type[T], raw: Any, path: str | Path, where: str = "") -> T:
    """``raw`` (a mapping from a YAML file ``path``) as a ``schema`` dataclass instance.

    ``where`` prefixes the key in errors (``"space.lr"`` → ``"<path>: space.lr.low: …"``);
    an empty one means the top level of the file."""
    prefix = f"{where}." if where else ""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {where or '(top level)'}: must be a mapping, got {raw!r}")
    fields = [f.name for f in dataclasses.fields(schema)]
    if unknown := sorted(set(raw) - set(fields)):
        raise ConfigError(f"{path}: {prefix}{', '.join(map(str, unknown))}: unknown key(s) "
                         f"{unknown}; allowed: {sorted(fields)}")
    parser = _parser(schema)
    try:
        cfg = parser.parse_object(raw)
    except ArgumentError as err:
        text = " ".join(str(err).split())
        match = re.match(r'Parser key "([^"]+)":\s*(.*)', text)
        missing = re.search(r"arguments are required: (.*)", text)
        key, problem = ((match.group(1), match.group(2)) if match else
                        (missing.group(1), "required") if missing else ("(top level)", text))
        raise ConfigError(f"{path}: {prefix}{key}: {problem}") from None
    return schema(**{name: cfg[name] for name in fields})
