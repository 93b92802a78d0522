"""Fixtures of the command tests: a tiny generated SOOP-layout cohort for the outcome runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_nifti

GRID = (24, 24, 16)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


@pytest.fixture(scope="module")
def tiny_soop(tmp_path_factory) -> Path:
    """20 masks (cubes at random places) + scores tracking the left-half lesion share."""
    root = tmp_path_factory.mktemp("tiny_soop")
    rng = np.random.default_rng(0)
    labels = np.zeros(GRID, np.int16)
    labels[:12], labels[12:] = 1, 2
    write_nifti(root / "atlas.nii.gz", labels, AFFINE)
    (root / "atlas.txt").write_text("1|L|left|1\n2|R|right|2\n", encoding="utf-8")
    rows = ["participant_id\tage\tnihss"]
    for i in range(1, 21):
        mask = np.zeros(GRID, np.uint8)
        corner = rng.integers(0, 16, 3) % np.array(GRID)
        mask[corner[0]:corner[0] + 8, corner[1]:corner[1] + 8, corner[2] % 8:corner[2] % 8 + 6] = 1
        write_nifti(root / "lesions" / f"sub-{i}_lesion.nii.gz", mask, AFFINE)
        rows.append(f"sub-{i}\t{50 + i}\t{mask[:12].sum() // 20}")
    (root / "scores.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root
