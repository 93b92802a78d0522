"""LightningCLI entry for ``cogimg fit|validate|test --config experiments/….yaml``.

The CLI class (:class:`~cogimg.tracking.experiment_cli.CogimgCLI`: class-path configs, linked
task/datamodule values, run directories, the bf16 fallback) lives in
:mod:`cogimg.tracking.experiment_cli`, where :mod:`cogimg.tracking.experiment` builds it too;
this command module only runs it.

An experiment YAML that is not a LightningCLI config says so with a top-level ``kind:``
(:data:`KINDS`): ``cogimg fit --config experiments/outcome/svr.yaml --out DIR`` runs
``cogimg outcome`` with the same arguments, ``cogimg fit --config experiments/quickstart.yaml``
``cogimg benchmark`` (:func:`routed_command`).
"""

from __future__ import annotations

import re
from pathlib import Path

from cogimg.tracking.experiment_cli import CogimgCLI, run_cli

__all__ = ["KINDS", "CogimgCLI", "config_kind", "refuse_remote_checkpoints", "remote_checkpoints",
           "routed_command", "run_lightning_cli"]

#: top-level ``kind`` of an experiment YAML -> the plain subcommand that runs it
KINDS = {"outcome": "outcome", "benchmark": "benchmark"}
#: the Lightning subcommands that run a ``kind`` experiment (the others have no meaning for it)
ROUTED_SUBCOMMANDS = ("fit",)
CONFIG_FLAGS = ("-c", "--config")


def config_paths(argv: list[str]) -> list[str]:
    """The values of ``--config`` / ``-c`` (also ``--config=X``) in ``argv``, in order."""
    paths = []
    for flag, value in zip(argv, [*argv[1:], None]):
        if flag in CONFIG_FLAGS and value is not None:
            paths.append(value)
        elif flag.startswith("--config="):
            paths.append(flag.split("=", 1)[1])
    return paths


def config_kind(path: str | Path) -> str | None:
    """The top-level ``kind`` of the YAML file ``path``; ``None`` when it has none, or is no
    readable mapping (LightningCLI then reports the file as it would)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        return None
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return config.get("kind") if isinstance(config, dict) else None


def routed_command(argv: list[str]) -> str | None:
    """The plain subcommand that runs ``argv``'s config (``["fit", "--config", "x.yaml", …]``)
    when its top-level ``kind`` names one, else ``None`` (a LightningCLI config).

    Raises :class:`~cogimg.commands._common.UsageError` for a ``kind`` not in :data:`KINDS`,
    a ``kind`` config under ``validate``/``test``, or one given with other configs.
    """
    from cogimg.commands._common import UsageError

    paths = config_paths(argv[1:])
    kinds = {path: config_kind(path) for path in paths}
    kinded = {path: kind for path, kind in kinds.items() if kind is not None}
    if not kinded:
        return None
    for path, kind in kinded.items():
        if kind not in KINDS:
            raise UsageError(f"{path}: unknown kind {kind!r}; known kinds: {sorted(KINDS)} "
                             "(a LightningCLI config has no kind)")
    (path, kind), *_ = kinded.items()
    if len(paths) > 1:
        raise UsageError(f"{path} (kind: {kind}) runs alone; got --config {' '.join(paths)}")
    if argv[0] not in ROUTED_SUBCOMMANDS:
        raise UsageError(f"{path} is a kind: {kind} experiment, which 'cogimg {argv[0]}' cannot "
                         f"run; use cogimg fit or cogimg {KINDS[kind]}")
    return KINDS[kind]


#: ``scheme://…``: a URL (``http``, ``https``, ``s3``, ``file`` …), never a local checkpoint path
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _config_mapping(value: str) -> dict:
    """The top-level mapping of a ``--config`` value: a YAML file, or (jsonargparse accepts
    both) an inline YAML/JSON string; ``{}`` when it is neither."""
    import yaml

    path = Path(value)
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else value
        config = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def remote_checkpoints(argv: list[str]) -> list[tuple[str, str]]:
    """``(where, value)`` for every ``ckpt_path`` in ``argv`` (``--ckpt_path X``,
    ``--ckpt_path=X``) or at the top level of a ``--config`` file that is a URL.

    Lightning downloads a URL checkpoint and unpickles it with ``weights_only=False``, i.e.
    runs whatever code the file holds; cogimg therefore only takes local checkpoint files.
    """
    found = []
    for flag, value in zip(argv, [*argv[1:], None]):
        if flag == "--ckpt_path" and value is not None and _URL.match(value):
            found.append(("--ckpt_path", value))
        elif flag.startswith("--ckpt_path=") and _URL.match(flag.split("=", 1)[1]):
            found.append(("--ckpt_path", flag.split("=", 1)[1]))
    for path in config_paths(argv):
        value = _config_mapping(path).get("ckpt_path")
        if isinstance(value, str) and _URL.match(value):
            found.append((f"{path}: ckpt_path", value))
    return found


def refuse_remote_checkpoints(argv: list[str]) -> None:
    """:class:`~cogimg.commands._common.UsageError` naming the first URL ``ckpt_path`` of
    ``argv`` (see :func:`remote_checkpoints`)."""
    from cogimg.commands._common import UsageError

    if found := remote_checkpoints(argv):
        where, url = found[0]
        raise UsageError(f"{where} {url} is a URL: cogimg loads only local checkpoint files "
                         "(Lightning would unpickle a downloaded one with weights_only=False); "
                         "download it, check where it comes from, and pass the file")


def run_lightning_cli(argv: list[str]) -> CogimgCLI:
    """Run LightningCLI on ``argv`` (``["fit", "--config", "x.yaml", …]``), with the
    import-path denylist enforced (:func:`~cogimg.tracking.experiment_cli.enforce_import_paths`)."""
    return run_cli(argv)
