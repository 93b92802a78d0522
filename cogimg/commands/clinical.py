"""``cogimg clinical``: per-patient reports from several checkpoints, with exit codes for scripts."""

from __future__ import annotations

HELP = ("per-patient clinical report (HTML + JSON) from segmentation / detection / classification "
        "checkpoints; NIfTI, DICOM or BIDS in; exit 0 ok, 1 inputs failed, 2 bad arguments, 3 OOD")

EPILOG = """\
input (--input):
  a NIfTI file or DICOM series folder (one image, for one-modality models); a case folder of
  modality-named images (dwi.nii.gz, ADC/ … one NIfTI file or DICOM series each); a BIDS tree
  or subject folder; or a folder of any of these (batch; names starting with '.' are ignored).

output (--out DIR):
  DIR/<case>/<case>_report.html  one-page report, images embedded (open in any browser)
  DIR/<case>/<case>_report.json  the same, machine-readable (ood: {flag, score, reasons} or null)
  DIR/<case>/…                   lesion mask and saliency NIfTI on the scan's grid, PNG figures
  DIR/summary.json               cases written, inputs failed (with reason), OOD-flagged cases
  Case folders appear complete or not at all; existing outputs are kept unless --overwrite.

exit codes:
  0  every input has its report, none flagged out of distribution
  1  at least one input failed (see summary.json "errors"; the other reports are written),
     or nothing run: unreadable or mismatched checkpoint, missing --input, no input found,
     outputs in the way without --overwrite
  2  nothing run: bad arguments (unknown option, no checkpoint given)
  3  every input has its report, at least one flagged out of distribution (summary.json
     "ood_flagged")
"""

SALIENCY_CHOICES = ("gradcam", "ig", "occlusion", "none")


def add_arguments(parser) -> None:
    import argparse

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--input", required=True, metavar="PATH",
                        help="NIfTI file, DICOM series folder, case folder, BIDS tree/subject, or a folder of cases")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--seg-ckpt", metavar="CKPT", help="lesion segmentation checkpoint")
    parser.add_argument("--det-ckpt", metavar="CKPT", help="detection checkpoint")
    parser.add_argument("--cls-ckpt", metavar="CKPT", action="append", default=[],
                        help="classification checkpoint (repeat for several diseases)")
    parser.add_argument("--saliency", default="gradcam", choices=SALIENCY_CHOICES,
                        help="saliency method for classifiers (default gradcam; none to skip)")
    parser.add_argument("--ood-threshold", type=float, default=None, metavar="Z",
                        help="flag inputs beyond Z robust SD of the training inputs "
                             "(default: the checkpoint's, 6)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys
    import tempfile

    import torch

    from cogimg.clinical.models import load_models
    from cogimg.clinical.pipeline import run_batch
    from cogimg.commands._common import UsageError

    if not (args.seg_ckpt or args.det_ckpt or args.cls_ckpt):
        raise UsageError("give at least one of --seg-ckpt, --det-ckpt, --cls-ckpt")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory(prefix="cogimg-clinical-") as cache:
        # unreadable checkpoints, missing inputs, outputs in the way: exit 2 (see cogimg.cli)
        models = load_models(args.seg_ckpt, args.det_ckpt, args.cls_ckpt, cache, device)
        summary = run_batch(args.input, args.out, models, device=device,
                            saliency=None if args.saliency == "none" else args.saliency,
                            ood_threshold=args.ood_threshold, overwrite=args.overwrite,
                            progress=not args.no_progress)
    for case in summary["written"]:
        flag = {True: "  OUT OF DISTRIBUTION", False: "", None: "  (no OOD check)"}[case["ood_flag"]]
        print(f"{case['case_id']}: {case['report']}{flag}")
    for error in summary["errors"]:
        print(f"FAILED {error['input']}: {error['reason']}", file=sys.stderr)
    print(f"{summary['n_written']} report(s), {summary['n_failed']} failed, "
          f"{len(summary['ood_flagged'])} flagged out of distribution -> {args.out}/summary.json "
          f"(exit {summary['exit_code']})")
    return summary["exit_code"]
