"""``cogimg report RUNS_DIR``: one static HTML page with leaderboard, figures and manifests."""

from __future__ import annotations

from cogimg.commands import add_stage_argument

HELP = "one static HTML page (RUNS_DIR/report.html) with the leaderboard, figures and run manifests"


def add_arguments(parser) -> None:
    parser.add_argument("runs_dir", help="folder searched recursively for run directories")
    parser.add_argument("--out", default=None, help="HTML file (default RUNS_DIR/report.html)")
    parser.add_argument("--figures", default=None,
                        help="folder of figures to show (default RUNS_DIR/figures; made if missing)")
    add_stage_argument(parser)


def run(args) -> int:
    from pathlib import Path

    from cogimg.tracking.report import write_report

    path = write_report(args.runs_dir, args.out or Path(args.runs_dir) / "report.html", figures_dir=args.figures,
                        stage=args.stage)
    print(f"wrote {path}")
    return 0
