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

    from cogimg.inference import predict_dataset, report_line

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    reports = predict_dataset(args.ckpt, args.input, args.out, device=device,
                              overwrite=args.overwrite)
    for report in reports:
        print(report_line(report))
    print(f"wrote {len(reports)} prediction(s) to {args.out}")
    return 0
