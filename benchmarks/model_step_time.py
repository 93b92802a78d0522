"""Training-step time of every registered segmentation model at cogimg's default sizes.

For each model: parameters, forward GFLOPs per sample (2 x MACs, FlopCounterMode) and the
time of one training step (forward + cross-entropy backward + SGD step) on random data,
after one warm-up step. With ``--reference`` the published / MONAI-default sizes are
timed too and the ratio reference / cogimg default is printed beside them.

    python benchmarks/model_step_time.py                     # CPU, batch 2 x 2 x 64^3
    python benchmarks/model_step_time.py --reference         # + published sizes
    python benchmarks/model_step_time.py --device cuda --size 128 --batch 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cogimg import models

#: Published or MONAI-default sizes, reached through the builders' kwargs.
REFERENCE_KWARGS: dict[str, dict] = {
    "dynunet": {"filters": (32, 64, 128, 256, 320)},  # nnU-Net widths
    "attention_unet": {"channels": (16, 32, 64, 128, 256)},
    "unetr": {"feature_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_heads": 12},
    "swinunetr": {"feature_size": 24, "window_size": 7},  # MONAI defaults (paper: 48)
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device, steps: int) -> list[float]:
    """Seconds per training step, ``steps`` steps after one warm-up step."""
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(shape, generator=generator).to(device)
    out_channels = None
    times = []
    for step in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        heads = models.deep_supervision_outputs(model(images))
        if out_channels is None:
            out_channels = heads[0].shape[1]
            labels = torch.randint(0, out_channels, (shape[0], *shape[2:]), generator=generator)
            labels = labels.to(device)
        loss = sum(F.cross_entropy(head, labels) for head in heads)
        loss.backward()
        optimizer.step()
        _sync(device)
        if step:  # the first step pays for allocation and kernel selection
            times.append(time.perf_counter() - start)
    return times


def measure(name: str, kwargs: dict, args, device: torch.device) -> dict:
    shape = (args.batch, args.channels, args.size, args.size, args.size)
    model = models.get(
        name, in_channels=args.channels, out_channels=2, patch_size=shape[2:], **kwargs
    )
    info = models.profile(model, (1, *shape[1:]))
    times = step_times(model, shape, device, args.steps)
    return {
        "params_m": info["params"] / 1e6,
        "gflops": info["flops"] / 1e9,
        "mean_s": statistics.mean(times),
        "min_s": min(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--channels", type=int, default=2, help="input modalities")
    parser.add_argument("--size", type=int, default=64, help="cubic patch edge in voxels")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--models", nargs="*", default=None, help="default: all segmentation")
    parser.add_argument("--reference", action="store_true", help="also time published sizes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no GPU")
    names = args.models or models.available("segmentation")

    print(
        f"# device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"input={args.batch}x{args.channels}x{args.size}^3 steps={args.steps} (+1 warm-up)"
    )
    header = f"{'model':16s} {'params_M':>9s} {'GFLOPs':>8s} {'step_mean_s':>11s} {'step_min_s':>10s}"
    if args.reference:
        header += f" | {'ref_params_M':>12s} {'ref_step_mean_s':>15s} {'ref/ours':>8s}"
    print(header)
    for name in names:
        row = measure(name, {}, args, device)
        line = (
            f"{name:16s} {row['params_m']:9.2f} {row['gflops']:8.1f} "
            f"{row['mean_s']:11.3f} {row['min_s']:10.3f}"
        )
        if args.reference:
            if name in REFERENCE_KWARGS:
                ref = measure(name, REFERENCE_KWARGS[name], args, device)
                line += (
                    f" | {ref['params_m']:12.2f} {ref['mean_s']:15.3f} "
                    f"{ref['mean_s'] / row['mean_s']:8.1f}"
                )
            else:
                line += f" | {'(same)':>12s}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
