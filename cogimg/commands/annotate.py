"""``cogimg annotate``: pre-label unlabelled scans, with uncertainty and a ranked review list."""

from __future__ import annotations

HELP = ("pre-label unlabelled scans with a segmentation checkpoint (MC dropout or an ensemble): "
        "masks + voxel-wise entropy + review_list.csv ranked by uncertainty")


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, nargs="+",
                        help="segmentation checkpoint(s); several = an ensemble")
    parser.add_argument("--input", required=True, help="a NIfTI file, a BIDS subject folder or a BIDS tree")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (outside the dataset)")
    parser.add_argument("--mc-samples", type=int, default=8,
                        help="MC-dropout passes per checkpoint with dropout (default 8; 1 = off)")
    parser.add_argument("--include-labelled", action="store_true",
                        help="also annotate scans that have a ground-truth mask (scored against it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dropout masks (default 0)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def run(args) -> int:
    import torch

    from cogimg.paradigms.lowlabel.annotate import REVIEW_LIST, annotate_dataset

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    review = annotate_dataset(args.ckpt, args.input, args.out, mc_samples=args.mc_samples,
                              device=device, overwrite=args.overwrite,
                              include_labelled=args.include_labelled, seed=args.seed)
    for row in review.itertuples():
        print(f"{row.rank:3d}. {row.subject_id}: uncertainty {row.uncertainty:.4f} nats, "
              f"{row.n_lesions} lesion(s), {row.total_volume_ml:.2f} mL")
    print(f"wrote {len(review)} pre-label(s) and {args.out}/{REVIEW_LIST}")
    return 0
