"""Is domain-randomised training limited by its training budget (issue 30)?

Runs ``studies/sim2real_steps.yaml`` (sim2real_cohort's folded-cortex DWI-defined recipe for
2000 and for 4000 steps; on the real cases each model alone and the ensemble of its seeds)
exactly as ``benchmarks/sim2real.py`` runs ``studies/sim2real.yaml``, and writes
``results/sim2real_steps[_<preset>].json`` with the same fields.

    python benchmarks/sim2real_steps.py [--out runs/studies/sim2real_steps] [--preset tiny|full]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim2real import REPO
from sim2real import main as run_sim2real

STUDY = REPO / "studies" / "sim2real_steps.yaml"
MODELS = ("randomised_dwi_sulci", "randomised_dwi_sulci_long", "seed_ensemble", "seed_ensemble_long")


def main(argv: list[str] | None = None) -> int:
    return run_sim2real(argv, STUDY, MODELS)


if __name__ == "__main__":
    raise SystemExit(main())
