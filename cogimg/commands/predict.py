"""``cogimg predict``: apply a trained segmentation or detection checkpoint to new scans."""

from __future__ import annotations

import argparse

HELP = "segment or detect lesions in new scans with a checkpoint: NIfTI/DICOM/BIDS in, mask NIfTI or boxes + JSON out"

#: ``--tta`` choices (the modes of :data:`cogimg.inference.settings.TTA_MODES`, literal here
#: so that ``--help`` does not import the library).
TTA_CHOICES = ("none", "flip")


def _overlap(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _volume_ml(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text} is not a number of mL") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number of mL >= 0")
    return value


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, nargs="+",
                        help="Lightning checkpoint of a cogimg task; several segmentation "
                             "checkpoints (e.g. seeds or folds) = an ensemble that averages "
                             "their probabilities")
    parser.add_argument("--input", required=True,
                        help="a NIfTI file or DICOM series folder (single-modality models), a case folder of "
                             "modality-named NIfTI files / DICOM series, a BIDS subject folder or tree")
    parser.add_argument("--out", default="predictions", metavar="DIR",
                        help="output folder (default ./predictions)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--tta", choices=TTA_CHOICES, default=None,
                        help="test-time augmentation: 'flip' averages the probabilities of the 8 "
                             "mirrored copies of each scan (every combination of the X, Y, Z "
                             "axes; nnU-Net's default), about 8x the network time; 'none' "
                             "predicts once (default: the checkpoint's tta_flip_axes)")
    parser.add_argument("--overlap", type=_overlap, default=None, metavar="F",
                        help="sliding-window overlap fraction in [0, 1) (default: the "
                             "checkpoint's sw_overlap; nnU-Net uses 0.5)")
    parser.add_argument("--sw-batch-size", type=_positive, default=None, metavar="N",
                        help="windows per forward pass (default: the checkpoint's sw_batch_size; "
                             "raise it on a GPU with memory to spare)")
    parser.add_argument("--min-lesion-ml", type=_volume_ml, default=None, metavar="ML",
                        help="remove predicted lesions (26-connected) smaller than ML mL; 0 = "
                             "off (default: the value `cogimg postprocess` chose for the "
                             "checkpoint, else the checkpoint's min_lesion_ml)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args) -> int:
    import torch

    from cogimg.inference import predict_dataset, report_line

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    reports = predict_dataset(args.ckpt, args.input, args.out, device=device,
                              overwrite=args.overwrite, tta=args.tta, overlap=args.overlap,
                              sw_batch_size=args.sw_batch_size,
                              min_lesion_ml=args.min_lesion_ml)
    for report in reports:
        print(report_line(report))
    print(f"wrote {len(reports)} prediction(s) to {args.out}")
    return 0
