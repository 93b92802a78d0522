"""``cogimg study studies/fusion_gain.yaml --out DIR``: run a study (arms × seeds as run
directories, resumable) and write its leaderboard, comparison table, figures and report."""

from __future__ import annotations

HELP = ("run a study file (studies/*.yaml): every arm x seed as a run directory (finished ones are "
        "kept), then leaderboard, comparisons (paired bootstrap CIs), figures and report.html")


def add_arguments(parser) -> None:
    parser.add_argument("study", help="study file (studies/*.yaml, kind: study)")
    parser.add_argument("--out", required=True, help="output folder (runs/<arm>/seed<k>/, study.yaml, …)")
    parser.add_argument("--preset", choices=("tiny", "full"), default=None,
                        help="the file's preset: tiny (tests, CI) or full (a GPU)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="replace the study's seeds")
    parser.add_argument("--accelerator", default=None, help="Lightning accelerator (cpu, gpu, auto …)")
    parser.add_argument("--devices", default=None, help="Lightning devices (1, 2, auto …)")
    parser.add_argument("--precision", default=None, help="Lightning precision (32-true, bf16-mixed …)")
    parser.add_argument("--workers", type=int, default=2, help="processes for synthesis (default 2)")


def run(args) -> int:
    from cogimg.commands._common import UsageError
    from cogimg.tracking.study import run_study
    from cogimg.tracking.study_spec import load_study

    try:  # a bad study file is a bad argument: exit 2, naming the file and key
        study = load_study(args.study, args.preset)
    except ValueError as err:
        raise UsageError(str(err)) from None
    run_study(args.study, args.out, seeds=args.seeds, accelerator=args.accelerator,
              devices=args.devices, precision=args.precision, workers=args.workers, study=study)
    return 0
