"""Does component-balanced patch sampling find the real case's small lesions (issue 30)?

Runs ``studies/sim2real_components.yaml`` (sim2real_steps' 4000-step recipe, its lesion-centred
patches centred per lesion voxel or per lesion; on the real cases each model alone and the
ensemble of its seeds) exactly as ``benchmarks/sim2real.py`` runs ``studies/sim2real.yaml``, and writes
``results/sim2real_components[_<preset>].json`` with the same fields.

    python benchmarks/sim2real_components.py [--out runs/studies/sim2real_components]
        [--preset tiny|full]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim2real import REPO
from sim2real import main as run_sim2real

STUDY = REPO / "studies" / "sim2real_components.yaml"
MODELS = ("randomised_dwi_sulci_long", "balanced_components", "seed_ensemble_long",
          "seed_ensemble_balanced")


def main(argv: list[str] | None = None) -> int:
    return run_sim2real(argv, STUDY, MODELS)


if __name__ == "__main__":
    raise SystemExit(main())
