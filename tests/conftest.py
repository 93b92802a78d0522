"""Shared fixtures: tiny NIfTI files and a tiny valid BIDS tree, built in ``tmp_path``.

``bids_root`` layout (12³ voxels at 2 mm, all on one grid):

    participants.tsv        6 participants, CN/AD/stroke, sites A and B
    sub-01/anat/sub-01_T1w.nii.gz                                    CN, A
    sub-02/anat/sub-02_T1w.nii.gz                                    AD, A (diagnosis written "ad")
    sub-03/ses-1/anat/sub-03_ses-1_T1w.nii.gz, ses-2/… (two sessions) AD, B
    sub-04/dwi/sub-04_{dwi,adc}.nii.gz                               stroke, A
    sub-05/dwi/sub-05_{dwi,adc}.nii.gz                               stroke, B
    sub-06/anat/sub-06_T1w.nii.gz                                    CN, B
    derivatives/lesions/sub-0{4,5}/dwi/sub-0X_{msk.nii.gz,boxes.json}   binary lesion masks
    derivatives/truth/sub-02/anat/sub-02_{desc-atrophy_map.nii.gz,effects.json}
    dataset_description.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# Fits in tests log to CSV only: W&B's offline service (a child process and its files per
# run) is exercised by the one test that is about it (tests/tracking/test_run.py), which
# sets COGIMG_WANDB=offline itself.
os.environ.setdefault("COGIMG_WANDB", "off")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` already runs N test processes: one compute thread each (and in the processes
    # they start) instead of N threads each contending for the same cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)

SHAPE = (12, 12, 12)
SPACING_MM = 2.0
#: 2 mm voxels, origin so that the volume is roughly centred on (0, 0, 0) mm.
AFFINE = np.array(
    [[SPACING_MM, 0, 0, -12.0], [0, SPACING_MM, 0, -12.0], [0, 0, SPACING_MM, -12.0], [0, 0, 0, 1]]
)
#: Voxels in the fixture's lesion masks: a 2×2×2 cube (sub-04) and a 3×2×2 box (sub-05).
LESION_VOXELS = {"sub-04": 8, "sub-05": 12}

PARTICIPANTS_TSV = """participant_id\tdiagnosis\tsite\tage\tsex\tMMSE\tNIHSS
sub-01\tCN\tA\t70\tF\t29\tn/a
sub-02\tad\tA\t74\tM\t21\tn/a
sub-03\tAD\tB\t68.5\tn/a\t19\tn/a
sub-04\tstroke\tA\t66\tM\tn/a\t7
sub-05\tstroke\tB\t59\tF\tn/a\t3
sub-06\tCN\tB\t71\tF\t30\tn/a
"""


def write_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    """Write ``data`` (X, Y, Z) to ``path`` (``.nii`` or ``.nii.gz``), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=float)), str(path))
    return path


def random_image(seed: int, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 10.0, shape).astype(np.float32)


def cube_mask(
    corner: tuple[int, int, int], size: tuple[int, int, int], shape: tuple[int, ...] = SHAPE
) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    x, y, z = corner
    mask[x : x + size[0], y : y + size[1], z : z + size[2]] = 1
    return mask


def build_bids_tree(root: Path) -> Path:
    """Write the tiny valid tree described in the module docstring under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "participants.tsv").write_text(PARTICIPANTS_TSV, encoding="utf-8")
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0"}), encoding="utf-8"
    )
    for i, pid in enumerate(["sub-01", "sub-02", "sub-06"]):
        write_nifti(root / pid / "anat" / f"{pid}_T1w.nii.gz", random_image(i))
    for ses in ("ses-1", "ses-2"):
        write_nifti(
            root / "sub-03" / ses / "anat" / f"sub-03_{ses}_T1w.nii.gz",
            random_image(10 + int(ses[-1])),
        )
    lesions = {"sub-04": cube_mask((4, 4, 4), (2, 2, 2)), "sub-05": cube_mask((6, 5, 3), (3, 2, 2))}
    for i, (pid, mask) in enumerate(lesions.items()):
        write_nifti(root / pid / "dwi" / f"{pid}_dwi.nii.gz", random_image(20 + i) * (1 + mask))
        write_nifti(
            root / pid / "dwi" / f"{pid}_adc.nii.gz", random_image(30 + i) * (1 - 0.5 * mask)
        )
        deriv = root / "derivatives" / "lesions" / pid / "dwi"
        write_nifti(deriv / f"{pid}_msk.nii.gz", mask)
        (deriv / f"{pid}_boxes.json").write_text(
            json.dumps([{"label": 1, "bbox_vox": [4, 4, 4, 6, 6, 6]}]), encoding="utf-8"
        )
    truth = root / "derivatives" / "truth" / "sub-02" / "anat"
    write_nifti(truth / "sub-02_desc-atrophy_map.nii.gz", np.zeros(SHAPE, dtype=np.float32))
    (truth / "sub-02_effects.json").write_text(json.dumps({"atrophy": {"hippocampus": 0.2}}), encoding="utf-8")
    return root


@pytest.fixture
def bids_root(tmp_path: Path) -> Path:
    """A fresh tiny valid BIDS tree (see module docstring); tests may modify it."""
    return build_bids_tree(tmp_path / "bids")


@pytest.fixture
def nifti_writer():
    """The :func:`write_nifti` helper, for tests that add or replace files."""
    return write_nifti


#: ../shared/data relative to the repository root (tests skip when it is absent).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def isles22_root() -> Path:
    """The real ISLES'22 case under ../shared/data/isles22; skips the test when absent."""
    root = SHARED_DATA / "isles22"
    if not (root / "participants.tsv").is_file():
        pytest.skip(f"real data not found at {root}")
    return root
