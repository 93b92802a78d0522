"""cogimg sliding-window inference vs. MONAI's ``sliding_window_inference``, side by side.

Same network (same weights), window, overlap, Gaussian weighting and windows per forward
pass, on a 160×192×160 volume; prints both times, their ratio (target ≤ 1.0) and the max
abs difference of the softmax outputs. cogimg runs the network in ``channels_last_3d``
memory format (its default in SegmentationTask); ``--contiguous`` turns that off to show
the windowing overhead alone. Both times, the ratio and the difference go to
``results/sliding_window.json`` (``--quick``: a 96×96×96 volume, one repeat,
``results/sliding_window_quick.json``). ``--device`` defaults to CUDA when available.

    python benchmarks/sliding_window.py [--device cuda] [--model unet] [--threads 1]
    python benchmarks/sliding_window.py --quick
"""

from __future__ import annotations

import argparse
import copy

import torch
from _common import add_runtime_args, apply_runtime, best_time, write_result
from monai.inferers import sliding_window_inference

from cogimg import models
from cogimg.models.sliding_window import sliding_window_predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--shape", default="160,192,160")
    parser.add_argument("--roi", default="64,64,64")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--sw-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contiguous", action="store_true", help="cogimg without channels_last_3d")
    parser.add_argument("--quick", action="store_true", help="96^3 volume, one repeat")
    add_runtime_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.shape, args.repeats = "96,96,96", 1
    device = apply_runtime(args)
    torch.manual_seed(0)
    shape = tuple(int(s) for s in args.shape.split(","))
    roi = tuple(int(s) for s in args.roi.split(","))
    net = models.get(args.model, in_channels=2, out_channels=2, patch_size=roi).to(device).eval()
    image = torch.randn(1, 2, *shape, device=device)
    channels_last = not args.contiguous
    ours_net = copy.deepcopy(net)
    if channels_last:
        ours_net = ours_net.to(memory_format=torch.channels_last_3d)

    def ours():
        return sliding_window_predict(ours_net, image, roi, overlap=args.overlap,
                                      sw_batch_size=args.sw_batch_size, channels_last=channels_last)

    def reference():
        with torch.no_grad():
            logits = sliding_window_inference(image, roi, args.sw_batch_size, net,
                                              overlap=args.overlap, mode="gaussian")
            return torch.softmax(logits, dim=1)

    def synced(fn):  # CUDA runs asynchronously: wait for the result inside the timing
        def run():
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out
        return run

    t_ours = best_time(synced(ours), args.repeats)
    t_ref = best_time(synced(reference), args.repeats)
    diff = (ours() - reference()).abs().max().item()
    print(f"volume {shape}, roi {roi}, overlap {args.overlap}, sw_batch {args.sw_batch_size}, "
          f"model {args.model}, device {device}, cogimg channels_last_3d={channels_last}")
    print(f"monai sliding_window_inference : {t_ref:8.3f} s")
    print(f"cogimg sliding_window_predict  : {t_ours:8.3f} s")
    print(f"ratio cogimg / monai           : {t_ours / t_ref:8.3f}  (target <= 1.0)")
    print(f"max |difference| of softmax    : {diff:.2e}")
    write_result("sliding_window_quick" if args.quick else "sliding_window",
                 {"settings": {"model": args.model, "shape": list(shape), "roi": list(roi),
                               "overlap": args.overlap, "sw_batch_size": args.sw_batch_size,
                               "repeats": args.repeats, "channels_last_3d": channels_last},
                  "monai_s": t_ref, "cogimg_s": t_ours, "ratio_cogimg_vs_monai": t_ours / t_ref,
                  "max_abs_softmax_difference": diff},
                 device=str(device),
                 headline={"cogimg / MONAI time": t_ours / t_ref, "target ratio": 1.0})


if __name__ == "__main__":
    main()
