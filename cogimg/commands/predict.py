"""``cogimg predict``: apply a trained segmentation or detection checkpoint to new scans."""

from __future__ import annotations

HELP = "segment or detect lesions in new scans with a checkpoint: NIfTI/DICOM/BIDS in, mask NIfTI or boxes + JSON out"


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint of a cogimg task")
    parser.add_argument("--input", required=True,
                        help="a NIfTI file or DICOM series folder (single-modality models), a case folder of "
                             "modality-named NIfTI files / DICOM series, a BIDS subject folder or tree")
    parser.add_argument("--out", default="predictions", metavar="DIR",
                        help="output folder (default ./predictions)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args) -> int:
    import torch

    from cogimg.inference import predict_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    reports = predict_dataset(args.ckpt, args.input, args.out, device=device,
                              overwrite=args.overwrite)
    for r in reports:
        if "detections" in r:  # detection checkpoint
            top = max((d["score"] for d in r["detections"]), default=float("nan"))
            print(f"{r['subject_id']}: {r['n_detections']} detection(s), top score {top:.2f}")
            continue
        line = f"{r['subject_id']}: {r['n_lesions']} lesion(s), {r['total_volume_ml']:.2f} mL"
        if "metrics" in r:
            m = r["metrics"]
            line += (f" | Dice {m['dice']:.3f}, lesion F1 {m['lesion_f1']:.3f}, "
                     f"AVD {m['absolute_volume_difference_ml']:.2f} mL, "
                     f"ALD {m['lesion_count_difference']}")
        print(line)
    print(f"wrote {len(reports)} prediction(s) to {args.out}")
    return 0
