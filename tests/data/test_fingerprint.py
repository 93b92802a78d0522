"""Dataset fingerprint: statistics against numpy by hand, reorientation, bad files named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cogimg.data.fingerprint import (
    extract_fingerprint,
    format_fingerprint,
    load_fingerprint,
    write_fingerprint,
)
from tests.conftest import write_nifti

SHAPE = (10, 12, 8)
#: RAS, 1 × 2 × 3 mm voxels
AFFINE = np.diag([1.0, 2.0, 3.0, 1.0])


def _masks() -> dict[str, np.ndarray]:
    """sub-01: two separate cubes (2 components); sub-02: two cubes touching at a corner
    (1 component, 26-connected) with label 2 on one; sub-03: empty."""
    a = np.zeros(SHAPE, np.uint8)
    a[1:3, 1:3, 1:3] = 1
    a[6:9, 6:9, 4:7] = 1
    b = np.zeros(SHAPE, np.uint8)
    b[2:4, 2:4, 2:4] = 1
    b[4:6, 4:6, 4:6] = 2
    return {"sub-01": a, "sub-02": b, "sub-03": np.zeros(SHAPE, np.uint8)}


def _tree(root: Path) -> dict[str, dict[str, np.ndarray]]:
    rows = ["participant_id\tdiagnosis\tsite"]
    arrays = {}
    for i, (pid, mask) in enumerate(_masks().items()):
        rng = np.random.default_rng(i)
        dwi = rng.normal(100, 10, SHAPE).astype(np.float32)
        adc = rng.normal(50, 5, SHAPE).astype(np.float32)
        write_nifti(root / pid / "dwi" / f"{pid}_dwi.nii.gz", dwi, AFFINE)
        write_nifti(root / pid / "dwi" / f"{pid}_adc.nii.gz", adc, AFFINE)
        write_nifti(root / "derivatives" / "lesions" / pid / "dwi" / f"{pid}_msk.nii.gz", mask,
                    AFFINE)
        rows.append(f"{pid}\tstroke\tA")
        arrays[pid] = {"dwi": dwi, "adc": adc, "mask": mask}
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return arrays


def test_statistics_equal_numpy_by_hand(tmp_path):
    arrays = _tree(tmp_path / "ds")
    fp = extract_fingerprint(tmp_path / "ds", samples=300, seed=7, num_workers=2, progress=False)
    assert fp["n_subjects"] == 3 and fp["label_key"] == "lesions_msk" and fp["reference"] == "dwi"
    ids = sorted(arrays)
    for m, key in enumerate(("dwi", "adc")):
        info = fp["modalities"][key]
        assert info["spacings_mm"] == [[1.0, 2.0, 3.0]] * 3
        assert info["shapes"] == [list(SHAPE)] * 3
        samples = []
        for i, sid in enumerate(ids):
            fg = arrays[sid][key][arrays[sid]["mask"] > 0].astype(np.float64)
            per = info["foreground_per_subject"][i]
            if fg.size == 0:
                assert per["mean"] is None
                continue
            assert per["mean"] == pytest.approx(fg.mean())
            assert per["std"] == pytest.approx(fg.std())
            assert per["percentile_0_5"] == pytest.approx(np.percentile(fg, 0.5))
            assert per["percentile_99_5"] == pytest.approx(np.percentile(fg, 99.5))
            # nnU-Net's sample: samples // subjects voxels with replacement, seeded per subject
            samples.append(np.random.default_rng([7, i, m]).choice(fg, 100, replace=True))
        sample = np.concatenate(samples).astype(np.float32).astype(np.float64)
        stats = info["foreground_intensity"]
        assert stats["n_samples"] == 200
        assert stats["mean"] == pytest.approx(sample.mean(), rel=1e-6)
        assert stats["median"] == pytest.approx(np.median(sample), rel=1e-6)
        assert stats["percentile_99_5"] == pytest.approx(np.percentile(sample, 99.5), rel=1e-6)
    voxel_ml = 1 * 2 * 3 / 1000
    subjects = {s["subject_id"]: s for s in fp["subjects"]}
    assert subjects["sub-01"]["components"] == 2
    assert subjects["sub-02"]["components"] == 1
    assert subjects["sub-03"]["components"] == 0 and subjects["sub-03"]["volume_ml"] == 0
    assert subjects["sub-01"]["volume_ml"] == pytest.approx((8 + 27) * voxel_ml)
    assert subjects["sub-02"]["label_voxels"] == {"0": int(np.prod(SHAPE)) - 16, "1": 8, "2": 8}
    total = 3 * np.prod(SHAPE)
    assert fp["class_frequencies"] == pytest.approx(
        {"0": (total - 35 - 16) / total, "1": (35 + 8) / total, "2": 8 / total})
    # write atomically, read back; the summary names every modality
    path = write_fingerprint(fp, tmp_path / "out" / "fingerprint.json")
    assert load_fingerprint(path) == json.loads(json.dumps(fp))
    assert "dwi:" in format_fingerprint(fp) and "adc:" in format_fingerprint(fp)


def test_spacings_and_shapes_after_canonical_reorientation(tmp_path):
    """A subject stored with X and Y swapped (voxel axis 0 runs along world Y: header zooms
    2 × 1 × 3 mm, shape 12 × 10 × 8) is reported on its RAS+ grid: 1 × 2 × 3 mm, 10 × 12 × 8."""
    _tree(tmp_path / "ds")
    swapped = np.array([[0, 1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    shape = (SHAPE[1], SHAPE[0], SHAPE[2])
    rng = np.random.default_rng(0)
    for suffix in ("dwi", "adc"):
        write_nifti(tmp_path / "ds" / "sub-01" / "dwi" / f"sub-01_{suffix}.nii.gz",
                    rng.normal(100, 10, shape).astype(np.float32), swapped)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 1:4, 1:2] = 1
    write_nifti(tmp_path / "ds" / "derivatives" / "lesions" / "sub-01" / "dwi" /
                "sub-01_msk.nii.gz", mask, swapped)
    fp = extract_fingerprint(tmp_path / "ds", samples=30, progress=False)
    assert fp["modalities"]["dwi"]["shapes"][0] == list(SHAPE)
    assert fp["modalities"]["dwi"]["spacings_mm"][0] == [1.0, 2.0, 3.0]
    assert fp["subjects"][0]["volume_ml"] == pytest.approx(6 * 6 / 1000)


def test_undecodable_file_is_named(tmp_path):
    _tree(tmp_path / "ds")
    bad = tmp_path / "ds" / "sub-02" / "dwi" / "sub-02_adc.nii.gz"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])  # header intact, data cut
    with pytest.raises(ValueError, match="sub-02_adc.nii.gz"):
        extract_fingerprint(tmp_path / "ds", samples=30, progress=False)


def test_missing_label_map_is_an_error(tmp_path):
    _tree(tmp_path / "ds")
    with pytest.raises(ValueError, match="no label map 'nope'"):
        extract_fingerprint(tmp_path / "ds", label_key="nope", progress=False)
