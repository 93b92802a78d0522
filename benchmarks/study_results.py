"""A finished study's numbers as a result file: its comparisons, leaderboard and study tables.

Reads a folder that ``cogimg study`` finished — the resolved ``study.yaml``, ``comparisons.csv``,
the runs' per-subject rows of the comparisons' stage (``test`` when any comparison uses it, else
``val``) and the study figures' tables (``figures/*.csv``, e.g. ``pruning.csv``, under
``tables``) — and writes ``results/<study>[_<preset>].json`` for ``benchmarks/render_results.py``;
nothing is trained or re-scored, so the numbers are those of the run directories (the
leaderboard is also written as ``OUT/leaderboard_<stage>.csv``).
``headline``: the first four comparisons' differences with their 95 % CIs.

    cogimg study studies/pruning.yaml --out runs/studies/pruning
    python benchmarks/study_results.py runs/studies/pruning [--results-dir results]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import study_test_leaderboard, write_result

HEADLINE_COMPARISONS = 4


def comparison_label(row: dict) -> str:
    return row.get("comparison") or f"{row['arm_b']} − {row['arm_a']} ({row['metric']}, {row['stage']})"


def headline(comparisons: list[dict]) -> dict:
    """``{comparison: "difference [low, high]"}`` of the first comparisons with a difference."""
    out = {}
    for row in comparisons:
        if len(out) == HEADLINE_COMPARISONS:
            break
        if row.get("difference") == row.get("difference"):  # not NaN
            out[comparison_label(row)] = (f"{row['difference']:+.3f} "
                                          f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]")
    return out


def study_record(out: Path) -> tuple[str, dict]:
    """``(result name, payload)`` of the finished study folder ``out``."""
    import pandas as pd

    from cogimg.tracking.study_spec import read_resolved

    study = read_resolved(out)
    if study is None:
        raise FileNotFoundError(f"{out / 'study.yaml'} not found: run `cogimg study STUDY --out {out}` first")
    path = out / "comparisons.csv"
    if study.get("comparisons") and not path.is_file():
        raise FileNotFoundError(f"{path} not found: the study in {out} did not finish")
    comparisons = pd.read_csv(path).to_dict("records") if path.is_file() else []
    stage = "test" if any(c.get("stage") == "test" for c in study.get("comparisons", [])) else "val"
    board = study_test_leaderboard(out, int(study.get("n_boot") or 1000), stage=stage)
    tables = {p.stem: pd.read_csv(p).to_dict("records") for p in sorted((out / "figures").glob("*.csv"))}
    name = study["name"] + (f"_{study['preset']}" if study.get("preset") else "")
    # the last `cogimg study` call on the folder: its file, wall time (s) per arm it ran, commit
    last_call = json.loads((out / "study.json").read_text(encoding="utf-8")) \
        if (out / "study.json").is_file() else None
    payload = {"what": study.get("question"), "study": study["name"], "preset": study.get("preset"),
               "out": str(out), "seeds": study["seeds"], "last_study_call": last_call,
               "comparisons": comparisons,
               "leaderboard_stage": stage,
               "leaderboard": [] if board is None else board.to_dict("records"), "tables": tables}
    return name, payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a folder `cogimg study … --out OUT` finished")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    name, payload = study_record(args.out)
    write_result(name, payload, results_dir=args.results_dir, headline=headline(payload["comparisons"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
