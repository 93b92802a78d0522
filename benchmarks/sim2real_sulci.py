"""Does folding the cortex of the randomised label maps help real ISLES'22 scans (issue 30)?

Runs ``studies/sim2real_sulci.yaml`` (the embolic and DWI-defined randomisation recipes, each
with and without ``p_sulci``: :func:`cogimg.data.label_maps.add_sulci`; the folded DWI-defined
recipe also with a bright skull base or with blob mimics) exactly as
``benchmarks/sim2real.py`` runs ``studies/sim2real.yaml``, and writes
``results/sim2real_sulci[_<preset>].json`` with the same fields, its headline quoting every
model of the study.

    python benchmarks/sim2real_sulci.py [--out runs/studies/sim2real_sulci] [--preset tiny|full]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim2real import REPO
from sim2real import main as run_sim2real

STUDY = REPO / "studies" / "sim2real_sulci.yaml"
MODELS = ("randomised_embolic", "randomised_embolic_sulci", "randomised_dwi", "randomised_dwi_sulci",
          "randomised_dwi_sulci_skullbase", "randomised_dwi_sulci_blobs")


def main(argv: list[str] | None = None) -> int:
    return run_sim2real(argv, STUDY, MODELS)


if __name__ == "__main__":
    raise SystemExit(main())
