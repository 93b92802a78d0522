"""Validation shared by the paradigms' config sections (``adaptation:``, ``semi_supervised:``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any


def checked_section(options: Any, section: str, config_class: type, methods: Sequence[str],
                    example: str) -> dict[str, Any]:
    """``options`` as a plain dict once it is a mapping with only ``config_class``'s field
    names and a known ``method``; otherwise one error that names ``section`` and the key."""
    if not isinstance(options, Mapping):
        raise TypeError(f"{section} must be a mapping like {example}, got {options!r}")
    known = {f.name for f in fields(config_class)}
    if unknown := sorted(set(options) - known):
        raise ValueError(f"{section}: unknown key(s) {unknown}; known: {sorted(known)}")
    if options.get("method") not in methods:
        raise ValueError(f"{section}.method={options.get('method')!r}; choose one of {list(methods)}")
    return dict(options)
