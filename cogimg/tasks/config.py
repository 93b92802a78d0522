"""One experiment config: the model/data values a task and its datamodule must share, linked.

An experiment YAML (``model:``/``data:``/``trainer:``, see :mod:`cogimg.lightning_cli`) states
each shared value once, on the datamodule; :func:`link_experiment_arguments` links it into the
task, for ``cogimg fit`` and for :func:`load_experiment` alike:

=================================  =============================================
datamodule (``data.init_args``)    task (``model.init_args``)
=================================  =============================================
``patch_size``                     ``patch_size`` (segmentation, detection)
``target_shape``                   ``input_shape`` (classification)
``modalities`` (``None``: the      ``in_channels`` = their number; ``modalities``
preset's, as the datamodules do)   (classification)
``preset``                         ``classes`` = the preset's (classification);
                                   ``num_classes`` = their number, background
                                   included (segmentation, detection)
=================================  =============================================

Every link is applied when the config is parsed, so ``cogimg fit``, a resumed checkpoint and
:func:`load_experiment` see the same values. A link whose source or target the chosen classes
lack is skipped (a classifier has no ``patch_size``). jsonargparse would silently replace a linked task key that a config gives
(for subclass-mode ``model:`` it neither rejects nor keeps it); :func:`check_no_linked_keys`
makes that an error naming the key and the datamodule key to set instead.

:func:`load_experiment` parses a config with the same parser and links, without training:
the leave-site-out and federated protocols build their tasks and datamodules from it.
"""

from __future__ import annotations

import dataclasses
import warnings
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jsonargparse._link_arguments import skip_apply_links
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser

from cogimg.diseases import get_preset


def _modalities(data_args) -> list[str]:
    """The datamodule's image channels: its ``modalities``, else its preset's (PatchDataModule
    has no such argument: always the preset's)."""
    modalities = data_args.get("modalities")
    return list(modalities) if modalities is not None else list(get_preset(data_args.get("preset")).modalities)


def _count_modalities(data_args) -> int:
    return len(_modalities(data_args))


def _classes(preset: str) -> list[str]:
    return list(get_preset(preset).classes)


def _count_classes(preset: str) -> int:
    return len(get_preset(preset).classes)


# (datamodule key under data.init_args, "" = all of them; task init arg; value from it or None
# for the value itself). A link is skipped where the datamodule lacks the source or the task
# the target.
LINKS: tuple[tuple[str, str, Callable[[Any], Any] | None], ...] = (
    ("patch_size", "patch_size", None),
    ("target_shape", "input_shape", None),
    ("", "in_channels", _count_modalities),
    ("", "modalities", _modalities),
    ("preset", "classes", _classes),
    ("preset", "num_classes", _count_classes),
)
# trainer keys about where and how a run is recorded: a protocol records its own runs.
RUN_MANAGEMENT_KEYS = ("callbacks", "logger", "default_root_dir", "enable_checkpointing")


def add_run_arguments(parser) -> None:
    """cogimg's run defaults: a ``checkpoint:`` section (ModelCheckpoint) that always keeps
    ``last.ckpt`` (what ``cogimg predict`` and resuming use), ``seed_everything`` 0."""
    parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
    parser.set_defaults({"seed_everything": 0, "checkpoint.save_last": True})


def link_experiment_arguments(parser) -> None:
    """Link the values a task shares with its datamodule (table in the module docstring) on
    ``parser``, whose ``model`` and ``data`` are subclass-mode class arguments."""
    for source, target, compute in LINKS:
        parser.link_arguments(f"data.init_args.{source}".rstrip("."), f"model.init_args.{target}",
                              compute_fn=compute, apply_on="parse")


def linked_targets() -> dict[str, str]:
    """``{task key: datamodule key it comes from}`` for every link (``model.init_args.…``)."""
    return {f"model.init_args.{target}": f"data.init_args.{source or 'modalities'}"
            for source, target, _ in LINKS}


def given_values(parser, args: Sequence[str]):
    """The namespace of what ``args`` (config files and overrides) set, without defaults and
    before links replace values; a subcommand's own namespace when ``args`` start with one."""
    args = [str(a) for a in args if not str(a).startswith("--print_config")]
    with skip_apply_links():
        cfg = parser.parse_args(args, defaults=False)
    subcommand = cfg.get("subcommand")
    return cfg.get(subcommand) if subcommand else cfg


def check_no_linked_keys(parser, args: Sequence[str], where: str = "config", given=None) -> None:
    """Raise ``ValueError`` naming every linked task key that ``args`` (as given to ``parser``;
    a subcommand first when it has them) set explicitly; ``given``: their
    :func:`given_values`, when already parsed."""
    given = given_values(parser, args) if given is None else given
    keys = [key for key in linked_targets() if given.get(key) is not None]
    if keys:
        sources = ", ".join(f"{key} comes from {linked_targets()[key]}" for key in keys)
        raise ValueError(f"{where}: linked key(s) {keys} must not be set: {sources}")


def experiment_parser() -> LightningArgumentParser:
    """The parser of ``cogimg fit`` for one experiment config (without the subcommand)."""
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action="config")
    parser.add_argument("--seed_everything", type=bool | int, default=0)
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.add_lightning_class_args(LightningModule, "model", subclass_mode=True)
    parser.add_lightning_class_args(LightningDataModule, "data", subclass_mode=True)
    add_run_arguments(parser)
    link_experiment_arguments(parser)
    return parser


@dataclasses.dataclass
class Experiment:
    """A parsed experiment config: classes and their keyword arguments, linked values included.

    ``task_args``/``data_args`` hold every init argument (defaults too); ``trainer_args`` only
    the trainer keys the config sets, without run-management ones; ``seed`` is
    ``seed_everything``."""

    task_class: type
    task_args: dict[str, Any]
    data_class: type
    data_args: dict[str, Any]
    trainer_args: dict[str, Any]
    seed: int = 0

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
        """:func:`load_experiment`."""
        return load_experiment(path, overrides)


def _class(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> Experiment:
    """Parse the experiment config ``path`` with ``cogimg fit``'s parser and links, then
    ``overrides`` (``["--data.init_args.fold", "1", …]``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and the
    key for anything jsonargparse rejects (unknown key, wrong type, a linked key given).
    Run-management trainer keys (:data:`RUN_MANAGEMENT_KEYS`) and a ``checkpoint:`` section are
    dropped with a warning naming them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"experiment config {path} does not exist")
    parser = experiment_parser()
    args = ["--config", str(path), *map(str, overrides)]
    try:
        cfg = parser.parse_args(args)
    except ArgumentError as err:  # name the file
        raise ValueError(f"{path}: {err}") from None
    given = given_values(parser, args)
    check_no_linked_keys(parser, args, where=str(path), given=given)
    set_keys = set(given.trainer.as_dict()) if given.get("trainer") else set()
    trainer = {k: v for k, v in cfg.trainer.as_dict().items() if k in set_keys}
    dropped = [f"trainer.{k}" for k in RUN_MANAGEMENT_KEYS if k in trainer]
    if given.get("checkpoint"):
        dropped.append("checkpoint")
    if dropped:
        warnings.warn(f"{path}: run-management key(s) {dropped} ignored here (the protocol records "
                      "its own runs)", stacklevel=2)
    trainer = {k: v for k, v in trainer.items() if k not in RUN_MANAGEMENT_KEYS}
    data_class, task_class = _class(cfg.data.class_path), _class(cfg.model.class_path)
    data_args = cfg.data.init_args.as_dict() if cfg.data.get("init_args") else {}
    task_args = cfg.model.init_args.as_dict() if cfg.model.get("init_args") else {}
    seed = cfg.seed_everything
    return Experiment(task_class, task_args, data_class, data_args, trainer,
                      0 if seed is None or isinstance(seed, bool) else int(seed))
