"""``cogimg models``: list the registered models with task, parameters and GFLOPs.

Each model is built with its default kwargs plus the core kwargs it accepts, taken from
``--input C,X,Y,Z`` (``in_channels``; X,Y,Z as ``patch_size`` for segmentation models,
as ``input_shape`` for the others) and
``--out-channels`` (``out_channels`` / ``num_classes``); its forward FLOPs for one sample
of that shape are counted on the meta device (no compute, no memory). A model that cannot take the input
shape (e.g. SwinUNETR needs multiples of 32) shows the reason instead of numbers.
"""

from __future__ import annotations

import argparse

HELP = "list registered models with task, parameter count and GFLOPs at an input shape"


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints C,X,Y,Z, got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected positive C,X,Y,Z (channels then spatial), got {text!r}")
    return shape


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=None, help="only models tagged with this task")
    parser.add_argument("--input", type=_shape, default=(2, 64, 64, 64), metavar="C,X,Y,Z",
                        help="one sample's shape for parameters and FLOPs (default 2,64,64,64)")
    parser.add_argument("--out-channels", type=int, default=2, metavar="K",
                        help="output classes incl. background (default 2)")
    parser.add_argument("--names-only", action="store_true", help="list names and tasks, build nothing")


def core_kwargs(entry, input_shape: tuple[int, ...], out_channels: int) -> dict:
    """The core kwargs ``entry``'s builder accepts, filled from the input shape and class count.

    The spatial shape goes to ``patch_size`` for segmentation models (the training patch)
    and to ``input_shape`` for the others (the whole volume): a classification ViT's own
    ``patch_size`` is its token size and must keep its default.
    """
    spatial = tuple(input_shape[1:])
    offered = {"in_channels": input_shape[0], "out_channels": out_channels, "num_classes": out_channels}
    if "segmentation" in entry.tasks:
        offered["patch_size"] = spatial
    else:
        offered["input_shape"] = spatial
    return {key: value for key, value in offered.items() if key in entry.parameters}


def run(args: argparse.Namespace) -> int:
    from cogimg import models
    from cogimg.commands._common import UsageError

    try:
        names = models.available(args.task)
    except ValueError as exc:  # an unknown --task
        raise UsageError(str(exc)) from None
    shape = "x".join(map(str, args.input))
    print(f"{'model':16s} {'task':20s} {'params_M':>9s} {'GFLOPs@' + shape:>18s}  description")
    for name in names:
        entry = models.spec(name)
        tasks = ",".join(sorted(entry.tasks))
        if args.names_only:
            print(f"{name:16s} {tasks:20s} {'':>9s} {'':>18s}  {entry.summary}")
            continue
        try:
            model = models.get(name, **core_kwargs(entry, args.input, args.out_channels))
            info = models.profile(model, (1, *args.input))
        except (TypeError, ValueError, RuntimeError) as exc:
            print(f"{name:16s} {tasks:20s} {'n/a':>9s} {'n/a':>18s}  {exc}")
            continue
        print(
            f"{name:16s} {tasks:20s} {info['params'] / 1e6:9.2f} {info['flops'] / 1e9:18.2f}"
            f"  {entry.summary}"
        )
    return 0
