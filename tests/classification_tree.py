"""A tiny BIDS cohort with an obvious class signal, for classification tests.

``build_classification_tree(root)``: ``n_per_class`` participants of each of CN, MCI, AD, PD
and stroke over two sites, 32³ voxels at 2 mm (a 64 mm head; 16³ at the tests' 4 mm), each
with T1w, FLAIR, amyloid PET and DAT PET, and the clinical columns of every preset (age,
sex, MMSE, APOE4, UPDRS, NIHSS). The signals:

- T1w: a dark blob ("atrophy") — left for MCI (mild) and AD (strong), right for PD, top
  for stroke; CN has none;
- amyloid PET: global uptake × (1 + 0.5 MCI + 1.0 AD);
- DAT PET: a bright striatum, faint in PD;
- FLAIR: a bright lesion for stroke;
- MMSE: 29 CN / 26 MCI / 21 AD (± 1), UPDRS 30 PD / 2 others; age, sex, APOE4 random.

Each signal alone separates its classes; noise (σ = 10 % of the brain) keeps it a learning
problem rather than a lookup. ``missing_pet`` lists participants written without amyloid
PET (to test missing-modality handling).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (32, 32, 32)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -32.0
DIAGNOSES = ("CN", "MCI", "AD", "PD", "stroke")
#: blob centre (voxels), radius (voxels) and T1w intensity factor per diagnosis
BLOBS = {"MCI": ((10, 16, 14), 5, 0.6), "AD": ((10, 16, 14), 5, 0.25),
         "PD": ((22, 16, 14), 5, 0.25), "stroke": ((16, 16, 23), 5, 0.25)}


def ball(centre: Sequence[float], radius: float) -> np.ndarray:
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.asarray(centre, dtype=float), axis=-1) <= radius


def _write(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), AFFINE), str(path))


def build_classification_tree(root: Path, n_per_class: int = 8, seed: int = 0,
                              diagnoses: Iterable[str] = DIAGNOSES,
                              missing_pet: Iterable[str] = ()) -> Path:
    """Write the cohort under ``root`` (see the module docstring) and return ``root``."""
    rng = np.random.default_rng(seed)
    missing = set(missing_pet)
    brain = ball((15.5, 15.5, 15.5), 13).astype(np.float32)
    striatum = ball((16, 18, 16), 3)
    rows = ["participant_id\tdiagnosis\tsite\tage\tsex\tMMSE\tAPOE4\tUPDRS\tNIHSS"]
    index = 0
    for dx in diagnoses:
        for _ in range(n_per_class):
            index += 1
            pid = f"sub-{index:03d}"
            noise = rng.normal(0.0, 10.0, (4, *SHAPE))
            t1 = 100.0 * brain
            if dx in BLOBS:
                centre, radius, factor = BLOBS[dx]
                jitter = rng.integers(-1, 2, 3)
                t1 = np.where(ball(np.add(centre, jitter), radius), t1 * factor, t1)
            amyloid = 100.0 * brain * (1.0 + {"MCI": 0.5, "AD": 1.0}.get(dx, 0.0))
            dat = 100.0 * brain * (1.0 + (0.2 if dx == "PD" else 2.0) * striatum)
            flair = 100.0 * brain * (1.0 + 1.5 * (dx == "stroke") * ball((16, 16, 23), 4))
            _write(root / pid / "anat" / f"{pid}_T1w.nii.gz", t1 + noise[0] * brain)
            _write(root / pid / "anat" / f"{pid}_FLAIR.nii.gz", flair + noise[1] * brain)
            if pid not in missing:
                _write(root / pid / "pet" / f"{pid}_trc-amyloid_pet.nii.gz", amyloid + noise[2] * brain)
            _write(root / pid / "pet" / f"{pid}_trc-dat_pet.nii.gz", dat + noise[3] * brain)
            mmse = {"CN": 29, "MCI": 26, "AD": 21}.get(dx, 29) + int(rng.integers(-1, 2))
            updrs = 30 if dx == "PD" else 2
            nihss = 8 if dx == "stroke" else "n/a"
            age, sex, apoe4 = int(rng.integers(60, 80)), "FM"[int(rng.integers(2))], int(rng.integers(3))
            rows.append(f"{pid}\t{dx}\tsite-{1 + index % 2}\t{age}\t{sex}\t{min(mmse, 30)}\t{apoe4}\t"
                        f"{updrs}\t{nihss}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny classification"}), encoding="utf-8")
    return root
