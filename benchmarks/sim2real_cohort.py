"""Does a larger label-map cohort help domain-randomised training on real scans (issue 30)?

Runs ``studies/sim2real_cohort.yaml`` (sim2real_seeds' two DWI-defined recipes on four times
its cohort, same compute; on the real cases each model alone, the two recipes' same-seed
ensemble and the ensemble of every checkpoint) exactly as ``benchmarks/sim2real.py`` runs
``studies/sim2real.yaml``, and writes ``results/sim2real_cohort[_<preset>].json`` with the
same fields; compare it with ``results/sim2real_seeds.json``.

    python benchmarks/sim2real_cohort.py [--out runs/studies/sim2real_cohort] [--preset tiny|full]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim2real import REPO
from sim2real import main as run_sim2real

STUDY = REPO / "studies" / "sim2real_cohort.yaml"
MODELS = ("randomised_dwi", "randomised_dwi_sulci", "recipe_ensemble", "seed_ensemble")


def main(argv: list[str] | None = None) -> int:
    return run_sim2real(argv, STUDY, MODELS)


if __name__ == "__main__":
    raise SystemExit(main())
