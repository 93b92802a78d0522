"""``cogimg demo``: the main job (synthesise → check → train and compare → leaderboard + figures)."""

from __future__ import annotations

HELP = "main job: synthesise the cohort, train and compare segmentation architectures, write leaderboard + figures"


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--subjects", type=int, default=120, help="synthetic subjects (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=2.0, help="voxel size in mm (default 2)")
    parser.add_argument("--models", default="unet,dynunet,unetr",
                        help="comma list of segmentation models (experiments/stroke/seg_<model>.yaml)")
    parser.add_argument("--budget", type=float, default=150.0,
                        help="training wall-time budget per model in seconds (default 150)")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis")
    parser.add_argument("--experiments", default=None, help="folder of the seg_<model>.yaml files")


def run(args) -> int:
    from cogimg.tracking.demo import run_demo

    run_demo(args.out, subjects=args.subjects, seed=args.seed, spacing_mm=args.spacing,
             models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
             budget_s=args.budget, workers=args.workers, experiments=args.experiments)
    return 0
