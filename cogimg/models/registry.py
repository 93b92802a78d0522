"""One registry for every network cogimg trains: a name -> a small builder function.

Modelled on timm's ``@register_model`` / ``timm.create_model``: a builder is a plain
function with keyword-only arguments that returns an ``nn.Module``; ``get(name, **kwargs)``
calls it after checking the kwargs, so a typo in a YAML config fails with the model's name
and the arguments it accepts instead of deep inside a constructor.

Tasks are tags, not separate registries: a backbone can serve ``classification`` and
``detection`` at once (``register("resnet18_3d", task=("classification", "detection"))``),
and ``available("detection")`` filters by tag.

Builders import their library (MONAI, timm) inside the function body, so importing
``cogimg.models`` and listing names stays cheap.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

#: The task tags a model may carry. A new task adds its tag here (one line) so that a
#: misspelt tag in ``register`` or ``available`` is an error rather than an empty list.
TASKS: tuple[str, ...] = ("segmentation", "classification", "detection", "fusion", "connectome")

_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

Builder = TypeVar("Builder", bound=Callable[..., "nn.Module"])


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its name, task tags and builder function."""

    name: str
    tasks: frozenset[str]
    builder: Callable[..., nn.Module]

    @property
    def summary(self) -> str:
        """First line of the builder's docstring (shown by ``cogimg models``)."""
        doc = inspect.getdoc(self.builder) or ""
        return doc.splitlines()[0] if doc else ""

    @property
    def parameters(self) -> Mapping[str, inspect.Parameter]:
        """The builder's keyword arguments, in declaration order."""
        return inspect.signature(self.builder).parameters


_REGISTRY: dict[str, ModelSpec] = {}


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task tag {task!r}; known tasks: {', '.join(TASKS)}")


def register(name: str, *, task: str | Iterable[str]) -> Callable[[Builder], Builder]:
    """Decorator that registers a builder under ``name`` with one or more task tags.

    The builder must take keyword-only arguments and no ``**kwargs`` (so that ``get`` can
    reject unknown arguments by name). Registering a name twice is an error: nothing is
    silently overwritten.

    Example::

        @register("unet", task="segmentation")
        def unet(*, in_channels: int = 1, out_channels: int = 2, ...) -> nn.Module: ...
    """
    if not _NAME_PATTERN.match(name):
        raise ValueError(
            f"model name {name!r} must be lower case letters, digits and '_', "
            "starting with a letter"
        )
    tasks = frozenset([task] if isinstance(task, str) else task)
    if not tasks:
        raise ValueError(f"model {name!r} needs at least one task tag; known: {', '.join(TASKS)}")
    for tag in sorted(tasks):
        _check_task(tag)

    def decorator(builder: Builder) -> Builder:
        for param in inspect.signature(builder).parameters.values():
            if param.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(
                    f"builder {builder.__qualname__} for model {name!r}: argument "
                    f"{param.name!r} must be keyword-only (put it after '*'), and **kwargs "
                    "is not allowed, so that unknown arguments can be reported by name"
                )
        if name in _REGISTRY:
            raise ValueError(
                f"model {name!r} is already registered (by "
                f"{_REGISTRY[name].builder.__module__}.{_REGISTRY[name].builder.__qualname__})"
            )
        _REGISTRY[name] = ModelSpec(name=name, tasks=tasks, builder=builder)
        return builder

    return decorator


def spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name``; ``KeyError`` lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; available models: {', '.join(available()) or '(none)'}"
        ) from None


def available(task: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally only those tagged ``task``."""
    if task is None:
        return sorted(_REGISTRY)
    _check_task(task)
    return sorted(name for name, entry in _REGISTRY.items() if task in entry.tasks)


def get(name: str, **kwargs: object) -> nn.Module:
    """Build the model registered under ``name`` with the builder's keyword arguments.

    Raises:
        KeyError: ``name`` is not registered (the message lists the available names).
        TypeError: an argument the builder does not accept, or a required one missing
            (the message names the argument, the model and what it accepts).
        ValueError: from the builder, for invalid values (e.g. a patch size the
            architecture cannot take).
    """
    entry = spec(name)
    params = entry.parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise TypeError(
            f"model {name!r} got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(params) or '(none)'}"
        )
    missing = [
        p for p, param in params.items() if param.default is inspect.Parameter.empty and p not in kwargs
    ]
    if missing:
        raise TypeError(
            f"model {name!r} needs keyword argument(s) {', '.join(map(repr, missing))}"
        )
    return entry.builder(**kwargs)
