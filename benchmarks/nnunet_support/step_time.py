"""Time one training step of a contender's network alone (no data loading, no augmentation).

Run by ``benchmarks/vs_nnunet.py`` with each contender's own interpreter, so that a
training iteration's wall time can be split into the network's share and the rest (data
loading and augmentation, which the step on a random batch leaves out)::

    <nnU-Net venv>/bin/python step_time.py nnunet --plans nnUNetPlans.json --out nnunet.json
    python step_time.py cogimg --patch 64 64 64 --batch 2 --out cogimg.json

``nnunet``: the network of the plans' ``3d_fullres`` configuration (nnU-Net's own builder, deep
supervision on), its batch and patch size, SGD with Nesterov momentum as nnU-Net trains it,
float32 (nnU-Net's CPU precision). ``cogimg``: the ``unet`` of cogimg's registry at
``--patch``/``--batch``, AdamW, float32 and bfloat16 autocast (cogimg's ``bf16-mixed`` on a
CPU with native bfloat16). Each step is forward, cross-entropy on random labels (summed over
the deep-supervision outputs), backward and an optimiser step; ``--steps`` timed steps
follow one untimed warm-up step, with ``--threads`` torch threads. Writes
``{"<precision>": {"step_s": median, "steps_s": [...]}, "batch": …, "patch": […]}``.

Standard library and torch only at import time: the same file runs in either environment.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def nnunet_network(plans_path: Path, in_channels: int, out_channels: int):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(str(plans_path))
    config = plans.get_configuration("3d_fullres")
    network = nnUNetTrainer.build_network_architecture(plans, config, in_channels, out_channels,
                                                       enable_deep_supervision=True)
    optimiser = torch.optim.SGD(network.parameters(), lr=1e-2, momentum=0.99, nesterov=True,
                                weight_decay=3e-5)
    return network, optimiser, int(config.batch_size), list(config.patch_size)


def cogimg_network(patch: list[int], in_channels: int, out_channels: int):
    from cogimg.models import registry

    network = registry.get("unet", in_channels=in_channels, out_channels=out_channels,
                           patch_size=patch)
    return network, torch.optim.AdamW(network.parameters(), lr=2e-3, weight_decay=1e-4)


def time_steps(network, optimiser, batch: int, patch: list[int], in_channels: int,
               out_channels: int, steps: int, bf16: bool) -> list[float]:
    """Wall seconds of ``steps`` training steps after one warm-up step."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, *patch, generator=generator)
    y = torch.randint(0, out_channels, (batch, *patch), generator=generator)
    network.train()
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = network(x)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = sum(torch.nn.functional.cross_entropy(
                o.float(), torch.nn.functional.interpolate(
                    y[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long())
                for o in outputs)
        loss.backward()
        optimiser.step()
        if i:  # step 0 warms up
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=("nnunet", "cogimg"))
    parser.add_argument("--plans", type=Path, help="nnUNetPlans.json (nnunet)")
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64], help="cogimg")
    parser.add_argument("--batch", type=int, default=2, help="cogimg")
    parser.add_argument("--in-channels", type=int, default=2)
    parser.add_argument("--out-channels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.tool == "nnunet":
        if args.plans is None:
            parser.error("nnunet needs --plans")
        network, optimiser, batch, patch = nnunet_network(args.plans, args.in_channels,
                                                          args.out_channels)
        precisions = {"float32": False}
    else:
        batch, patch = args.batch, list(args.patch)
        network, optimiser = cogimg_network(patch, args.in_channels, args.out_channels)
        precisions = {"float32": False, "bf16-mixed": True}
    record = {"tool": args.tool, "batch": batch, "patch": patch, "threads": args.threads,
              "parameters": sum(p.numel() for p in network.parameters())}
    for name, bf16 in precisions.items():
        times = time_steps(network, optimiser, batch, patch, args.in_channels,
                           args.out_channels, args.steps, bf16)
        record[name] = {"step_s": round(statistics.median(times), 3),
                        "steps_s": [round(t, 3) for t in times]}
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
