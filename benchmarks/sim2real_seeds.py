"""How much of the real-case Dice is seed noise, and do ensembles recover it (issue 30)?

Runs ``studies/sim2real_seeds.yaml`` (the DWI-defined randomisation recipe with and without a
folded cortex, three seeds each; on the real cases each model alone, the two recipes' same-seed
ensemble with and without mirrored test-time augmentation, and the six-member ensemble of every
seed) exactly as ``benchmarks/sim2real.py`` runs ``studies/sim2real.yaml``, and writes
``results/sim2real_seeds[_<preset>].json`` with the same fields; its headline quotes every model
with the range of its per-seed real Dice.

    python benchmarks/sim2real_seeds.py [--out runs/studies/sim2real_seeds] [--preset tiny|full]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim2real import REPO
from sim2real import main as run_sim2real

STUDY = REPO / "studies" / "sim2real_seeds.yaml"
MODELS = ("randomised_dwi", "randomised_dwi_sulci", "recipe_ensemble", "recipe_ensemble_flip",
          "seed_ensemble")


def main(argv: list[str] | None = None) -> int:
    return run_sim2real(argv, STUDY, MODELS)


if __name__ == "__main__":
    raise SystemExit(main())
