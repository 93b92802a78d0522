"""``cogimg explain``: saliency maps of a trained checkpoint for new scans."""

from __future__ import annotations

HELP = "explain a checkpoint's output: saliency NIfTI on the scan's grid + PNG overlay per subject"

METHOD_CHOICES = ("gradcam", "ig", "occlusion", "rollout")


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint of a cogimg task")
    parser.add_argument("--input", required=True,
                        help="a NIfTI file or DICOM series folder (single-modality models), a case folder of "
                             "modality-named NIfTI files / DICOM series, a BIDS subject folder or tree")
    parser.add_argument("--method", required=True, choices=METHOD_CHOICES,
                        help="gradcam (CNNs), ig (integrated gradients), occlusion, rollout (ViTs)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--target", default=None,
                        help="classification: class name or index to explain (default: the "
                             "predicted class); segmentation explains the lesion-logit sum")
    parser.add_argument("--ig-steps", type=int, default=16, metavar="N",
                        help="integrated gradients: integration steps (default 16)")
    parser.add_argument("--window", type=int, default=8, metavar="VOX",
                        help="occlusion: cube edge in preprocessed voxels (default 8)")
    parser.add_argument("--stride", type=int, default=4, metavar="VOX",
                        help="occlusion: window stride in preprocessed voxels (default 4)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def method_options(args) -> dict:
    """The options of ``args.method`` only (so the JSON record lists what was used)."""
    if args.method == "ig":
        return {"n_steps": args.ig_steps}
    if args.method == "occlusion":
        return {"window_vox": args.window, "stride_vox": args.stride}
    return {}


def run(args) -> int:
    import torch

    from cogimg.paradigms.explain.pipeline import explain_inputs

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    records = explain_inputs(args.ckpt, args.input, args.out, args.method, target=args.target,
                             options=method_options(args), device=device, overwrite=args.overwrite)
    for r in records:
        what = r["target"] if "probabilities" not in r else \
            f"{r['target']} (p = {r['probabilities'][r['target']]:.3f}; predicted {r['predicted']})"
        print(f"{r['subject_id']}: {args.method} of {what} -> {r['saliency']}, {r['overlay']}")
    print(f"wrote {len(records)} saliency map(s) to {args.out}")
    return 0
