"""Training-step time of every registered segmentation model at cogimg's default sizes.

For each model: parameters, forward GFLOPs per sample (2 x MACs, FlopCounterMode) and the
wall time of one training step (forward + cross-entropy backward + SGD step) on random
data, after one warm-up step. With ``--reference`` the published / MONAI-default sizes
are timed too and the ratio reference / cogimg default is printed beside them.

On a shared machine other processes inflate step times, so the table also reports
``others``: the CPU cores other processes used during the timed steps (from
/proc/stat, Linux); ``--wait-idle S`` waits up to S seconds for an idle CPU before each
model. Compare ``step_min_s`` of rows whose ``others`` is near 0.

``--variants`` times each model side by side in several ways: ``default`` (contiguous
float32), ``channels_last`` (weights and input in ``channels_last_3d``, SegmentationTask's
default; not for networks with 2D layers) and ``bf16`` (autocast to bfloat16, what
``precision: bf16-mixed`` does). Every row is written to ``results/model_step_time.json``
(``--quick``: two small models at 32^3, one step, ``results/model_step_time_quick.json``).

    python benchmarks/model_step_time.py                        # CPU, batch 2 x 2 x 64^3
    python benchmarks/model_step_time.py --reference --wait-idle 600
    python benchmarks/model_step_time.py --variants default channels_last bf16
    python benchmarks/model_step_time.py --device cuda --size 128
    python benchmarks/model_step_time.py --quick                # < 1 min, checks the JSON
    python benchmarks/model_step_time.py --models unet --variants default bf16 \
        --name model_step_time_bf16                             # the README's bf16 numbers

``--device`` defaults to CUDA when torch sees a GPU, else CPU; ``--name`` picks the result
file (``results/<name>.json``). The headline of the file is, per model, the best step time
of each variant and each variant's ratio to ``default``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _common import add_runtime_args, apply_runtime, write_result

from cogimg import models

VARIANTS = ("default", "channels_last", "bf16")

#: Published or MONAI-default sizes, reached through the builders' kwargs.
REFERENCE_KWARGS: dict[str, dict] = {
    "dynunet": {"filters": (32, 64, 128, 256, 320)},  # nnU-Net widths
    "attention_unet": {"channels": (16, 32, 64, 128, 256)},
    "unetr": {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12},
    "swinunetr": {"feature_size": 24, "window_size": 7},  # MONAI defaults (paper: 48)
}


def busy_cpu_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (NaN off Linux)."""
    try:
        with open("/proc/stat", encoding="utf-8") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
    except OSError:
        return float("nan")
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def wait_until_idle(max_seconds: float, max_cores: float = 0.1) -> None:
    """Return once other processes use < ``max_cores`` over 2 s, or after ``max_seconds``."""
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        before = busy_cpu_seconds()
        time.sleep(2.0)
        if (busy_cpu_seconds() - before) / 2.0 < max_cores:
            return


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(
    model: torch.nn.Module, shape: tuple[int, ...], device: torch.device, steps: int,
    variant: str = "default",
) -> tuple[list[float], list[float]]:
    """Wall seconds per training step and cores used by other processes meanwhile."""
    model = model.to(device).train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(shape, generator=generator).to(device)
    labels = torch.randint(0, 2, (shape[0], *shape[2:]), generator=generator).to(device)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last_3d)
        images = images.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    times, others = [], []
    for step in range(steps + 1):
        _sync(device)
        busy, own, start = busy_cpu_seconds(), time.process_time(), time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=variant == "bf16"):
            outputs = model(images)
        heads = [head.float() for head in models.deep_supervision_outputs(outputs)]
        loss = sum(F.cross_entropy(head, labels) for head in heads)
        loss.backward()
        optimizer.step()
        _sync(device)
        wall = time.perf_counter() - start
        if step:  # the first step pays for allocation and kernel selection
            times.append(wall)
            other = busy_cpu_seconds() - busy - (time.process_time() - own)
            others.append(max(0.0, other) / wall)
    return times, others


def measure(name: str, kwargs: dict, args: argparse.Namespace, device: torch.device,
            variant: str = "default") -> dict | None:
    """One model's row; None for ``channels_last`` on a network with 2D layers."""
    shape = (args.batch, args.channels, args.size, args.size, args.size)
    model = models.get(name, in_channels=args.channels, out_channels=2, patch_size=shape[2:], **kwargs)
    if variant == "channels_last" and any(p.ndim == 4 for p in model.parameters()):
        return None  # channels_last_3d needs rank-5 weights (SegmentationTask skips it too)
    info = models.profile(model, (1, *shape[1:]))
    if args.wait_idle:
        wait_until_idle(args.wait_idle)
    times, others = step_times(model, shape, device, args.steps, variant)
    return {
        "params_m": info["params"] / 1e6,
        "gflops": info["flops"] / 1e9,
        "mean_s": statistics.mean(times),
        "min_s": min(times),
        "others": statistics.mean(others),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=2, help="input modalities")
    parser.add_argument("--size", type=int, default=64, help="cubic patch edge in voxels")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up")
    parser.add_argument("--models", nargs="*", default=None, help="default: all segmentation")
    parser.add_argument("--reference", action="store_true", help="also time published sizes")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for an idle CPU before each model")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=["default", "channels_last"], help="ways to run each model")
    parser.add_argument("--quick", action="store_true",
                        help="unet and attention_unet at batch 1 x 32^3, one step (checks the JSON)")
    parser.add_argument("--name", help="result file name (default: model_step_time[_quick])")
    add_runtime_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.size, args.batch, args.steps = 32, 1, 1
        args.models = args.models or ["unet", "attention_unet"]
    device = apply_runtime(args)
    names = args.models or models.available("segmentation")

    print(
        f"# device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"input={args.batch}x{args.channels}x{args.size}^3 steps={args.steps} (+1 warm-up)"
    )
    header = (f"{'model':16s} {'variant':13s} {'params_M':>8s} {'GFLOPs':>7s} {'step_mean_s':>11s} "
              f"{'step_min_s':>10s} {'others':>6s} {'/default':>8s}")
    if args.reference:
        header += f" | {'ref_params_M':>12s} {'ref_step_min_s':>14s} {'others':>6s} {'ref/ours':>8s}"
    print(header)
    rows = []
    for name in names:
        baseline = None
        for variant in args.variants:
            row = measure(name, {}, args, device, variant)
            if row is None:
                print(f"{name:16s} {variant:13s} (not applicable: 2D layers)", flush=True)
                continue
            baseline = baseline or (row["min_s"] if variant == "default" else None)
            ratio = row["min_s"] / baseline if baseline else float("nan")
            rows.append({"model": name, "variant": variant, "size": "cogimg", **row,
                         "min_s_vs_default": ratio})
            line = (f"{name:16s} {variant:13s} {row['params_m']:8.2f} {row['gflops']:7.1f} "
                    f"{row['mean_s']:11.3f} {row['min_s']:10.3f} {row['others']:6.2f} {ratio:8.2f}")
            if args.reference and name in REFERENCE_KWARGS:
                ref = measure(name, REFERENCE_KWARGS[name], args, device, variant)
                rows.append({"model": name, "variant": variant, "size": "reference", **ref,
                             "min_s_vs_cogimg_size": ref["min_s"] / row["min_s"]})
                line += (f" | {ref['params_m']:12.2f} {ref['min_s']:14.3f} {ref['others']:6.2f} "
                         f"{ref['min_s'] / row['min_s']:8.1f}")
            elif args.reference:
                line += f" | {'(no separate reference size)':>45s}"
            print(line, flush=True)
    settings = {"device": str(device), "batch": args.batch, "channels": args.channels,
                "size": args.size, "steps": args.steps, "variants": args.variants,
                "reference": args.reference, "quick": args.quick}
    headline = {}
    for row in rows:
        if row["size"] == "cogimg":
            headline[f"{row['model']} {row['variant']} step, s"] = row["min_s"]
            if row["variant"] != "default":
                headline[f"{row['model']} {row['variant']} / default"] = row["min_s_vs_default"]
    name = args.name or ("model_step_time_quick" if args.quick else "model_step_time")
    write_result(name, {"settings": settings, "rows": rows}, device=str(device),
                 headline=headline)


if __name__ == "__main__":
    main()
