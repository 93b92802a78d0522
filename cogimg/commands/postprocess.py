"""``cogimg postprocess --ckpt CKPT``: choose the smallest lesion kept, on validation subjects.

Predicts the validation subjects of the run that wrote ``CKPT`` once, scores each candidate
threshold (``0`` = off) with the ISLES'22 metrics, keeps the best mean Dice (ties: the smaller)
and writes ``<ckpt stem>.postprocess.json`` beside the checkpoint, which ``cogimg predict`` and
``cogimg clinical`` then apply (:mod:`cogimg.inference.postprocess`).
"""

from __future__ import annotations

import argparse

from cogimg.commands.predict import _volume_ml

HELP = ("choose a segmentation checkpoint's lesion-size threshold on its run's validation "
        "subjects (written beside the checkpoint; cogimg predict applies it)")


def _candidates(text: str) -> list[float]:
    values = [_volume_ml(t.strip()) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one threshold in mL")
    return values


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True,
                        help="segmentation checkpoint; its run's config.yaml (beside "
                             "checkpoints/) names the data and the validation split")
    parser.add_argument("--candidates", type=_candidates, default=None, metavar="ML1,ML2",
                        help="thresholds in mL to try, comma-separated (0 = off is always "
                             "tried; default 0,0.05,0.1,0.2,0.5,1,2)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="where to write the choice (default: <ckpt stem>.postprocess.json "
                             "beside the checkpoint, where cogimg predict reads it)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier choice for this checkpoint")


def run(args) -> int:
    import torch

    from cogimg.inference.postprocess import choice_path, choose_for_checkpoint
    from cogimg.models.postprocess import DEFAULT_CANDIDATES_ML

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    record = choose_for_checkpoint(args.ckpt, args.candidates or DEFAULT_CANDIDATES_ML,
                                   device=device, overwrite=args.overwrite, out=args.out)
    print(f"{'min_lesion_ml':>13}  {'Dice':>6}  {'lesion F1':>9}  {'ALD':>5}  {'HD95 mm':>8}")
    for row in record["table"]:
        hd95 = row["hausdorff95_mm"]
        print(f"{row['min_lesion_ml']:>13g}  {row['dice']:6.3f}  {row['lesion_f1']:9.3f}  "
              f"{row['lesion_count_difference']:5.2f}  "
              f"{'n/a' if hd95 is None else f'{hd95:.2f}':>8}")
    print(f"chose min_lesion_ml = {record['min_lesion_ml']:g} on "
          f"{len(record['subjects'])} validation case(s); wrote {args.out or choice_path(args.ckpt)}")
    return 0
