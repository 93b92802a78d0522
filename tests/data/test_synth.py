"""End-to-end tests of the synthetic cohort (``cogimg synth``) on small, coarse cohorts.

A session fixture writes 10 subjects at 4 mm (≈ 2 s after the template is loaded); the
effect-level checks live in ``test_synth_effects.py``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import threading
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cogimg.data.synth import cohort as synth_cohort
from cogimg.data.synth import generate_cohort
from cogimg.data.synth.difficulty import get_difficulty
from cogimg.data.synth.plan import cohort_diagnoses, diagnosis_counts, plan_cohort
from cogimg.data.synth.writer import MODALITY_FILES, modality_path

N_SUBJECTS = 10
KW = {"n_subjects": N_SUBJECTS, "seed": 3, "spacing_mm": 4.0, "sites": 2, "progress": False}


def _rows(root: Path) -> list[dict]:
    with open(root / "participants.tsv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _nifti_arrays(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(nib.load(p).dataobj)
            for p in sorted(root.rglob("*.nii.gz"))}


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("synth") / "cohort", **KW)


def test_layout_has_every_modality_and_truth(cohort):
    rows = _rows(cohort)
    assert [r["participant_id"] for r in rows] == [f"sub-{i:04d}" for i in range(1, N_SUBJECTS + 1)]
    for row in rows:
        pid = row["participant_id"]
        for modality in MODALITY_FILES:
            img = nib.load(cohort / modality_path(pid, modality))
            assert img.shape == (50, 59, 48)  # the 197×233×189 mm MNI152 field of view at 4 mm
            assert np.allclose(np.diag(img.affine), [4, 4, 4, 1])
        truth = json.loads((cohort / f"derivatives/truth/{pid}/{pid}_effects.json").read_text(encoding="utf-8"))
        assert truth["clinical"]["diagnosis"] == row["diagnosis"]
        assert truth["regional_volumes_ml"]["hippocampus_l"] > 0
        for rel in truth["maps"].values():
            assert (cohort / rel).is_file()
        assert (cohort / f"derivatives/microbleeds/{pid}/anat/{pid}_msk.nii.gz").is_file()
        has_lesions = (cohort / f"derivatives/lesions/{pid}/anat/{pid}_msk.nii.gz").is_file()
        assert has_lesions == (row["diagnosis"] == "stroke")
    for name in ("dataset_description.json", "README", "participants.json",
                 "derivatives/truth/sites.json", "derivatives/lesions/dataset_description.json"):
        assert (cohort / name).is_file(), name


def test_participants_columns_and_not_applicable(cohort):
    for row in _rows(cohort):
        dx = row["diagnosis"]
        assert row["site"] in ("site-1", "site-2")
        assert row["sex"] in ("M", "F")
        assert 0 <= int(row["MMSE"]) <= 30 and int(row["APOE4"]) in (0, 1, 2)
        assert (row["NIHSS"] != "n/a") == (dx == "stroke")
        assert (row["UPDRS"] != "n/a") == (dx in ("CN", "PD"))
        assert (row["converter"] != "n/a") == (dx == "MCI")


def test_images_load_as_float_with_values(cohort):
    pid = _rows(cohort)[0]["participant_id"]
    t1 = nib.load(cohort / modality_path(pid, "T1w"))
    assert t1.get_data_dtype() == np.int16 and t1.dataobj.slope != 1.0
    data = t1.get_fdata()
    brain = data > 0
    assert 0.15 < brain.mean() < 0.35  # skull-stripped brain in the MNI field of view
    assert 100 < np.median(data[brain]) < 5000  # scanner units, not int16 codes
    adc = nib.load(cohort / modality_path(pid, "adc")).get_fdata()
    assert 500 < np.median(adc[brain]) < 1500  # 10⁻⁶ mm²/s, like ISLES'22


@pytest.mark.parametrize("other_thread", [False, True], ids=["fork", "spawn"])
def test_same_seed_gives_identical_arrays_serial_and_parallel(cohort, tmp_path, monkeypatch, other_thread):
    """Workers are forked from a single-threaded process and spawned when another thread runs
    (a fork would copy its held locks); both give the serial run's arrays."""
    methods = []
    get_context = synth_cohort.mp.get_context
    monkeypatch.setattr(synth_cohort.mp, "get_context", lambda m: methods.append(m) or get_context(m))
    release = threading.Event()
    thread = threading.Thread(target=release.wait, daemon=True)
    if other_thread:
        thread.start()
    expected = "fork" if threading.active_count() == 1 else "spawn"
    try:
        again = generate_cohort(tmp_path / "again", workers=2, **KW)
    finally:
        release.set()
    assert methods == [expected]
    assert (cohort / "participants.tsv").read_bytes() == (again / "participants.tsv").read_bytes()
    first, second = _nifti_arrays(cohort), _nifti_arrays(again)
    assert first.keys() == second.keys()
    for key in first:
        assert np.array_equal(first[key], second[key]), key
    pid = "sub-0001"
    truth = f"derivatives/truth/{pid}/{pid}_effects.json"
    assert json.loads((cohort / truth).read_text(encoding="utf-8")) == json.loads((again / truth).read_text(encoding="utf-8"))


def test_other_seed_gives_other_subjects(cohort, tmp_path):
    other = generate_cohort(tmp_path / "other", **{**KW, "seed": 4, "n_subjects": 2})
    a = nib.load(cohort / modality_path("sub-0001", "T1w")).get_fdata()
    b = nib.load(other / modality_path("sub-0001", "T1w")).get_fdata()
    assert not np.array_equal(a, b)


def test_subjects_are_not_near_copies(cohort):
    vols = [nib.load(cohort / modality_path(f"sub-{i:04d}", "T1w")).get_fdata() for i in (1, 2, 3)]
    masks = [v > 0 for v in vols]
    for i in range(3):
        for j in range(i + 1, 3):
            # different head sizes / deformations: the brain outlines differ in many voxels
            assert (masks[i] ^ masks[j]).sum() > 0.05 * masks[i].sum()


def test_cogimg_check_accepts_the_cohort(cohort):
    from cogimg.data.bids import load_dataset

    dataset = load_dataset(cohort, strict=True)
    assert len(dataset) == N_SUBJECTS
    assert not dataset.errors and not dataset.warnings
    assert set(MODALITY_FILES) <= set(dataset.modalities())
    assert {"lesions_msk", "microbleeds_msk", "microbleeds_dseg"} <= set(dataset.label_keys())


def test_diagnosis_and_site_counts_as_planned(cohort):
    rows = _rows(cohort)
    expected = diagnosis_counts(N_SUBJECTS, cohort_diagnoses(("stroke", "ad", "pd")), None)
    assert Counter(r["diagnosis"] for r in rows) == Counter({k: v for k, v in expected.items() if v})
    plan = plan_cohort(N_SUBJECTS, KW["seed"], KW["sites"], "stroke,ad,pd", get_difficulty("medium"))
    assert [r["site"] for r in rows] == [f"site-{s.site + 1}" for s in plan.subjects]


def test_requested_proportions_and_balanced_sites(tmp_path):
    out = generate_cohort(tmp_path / "c", 8, 0, spacing_mm=4.0, sites=2, diseases="ad",
                          proportions={"CN": 1, "MCI": 0, "AD": 1}, site_confound=0.0, progress=False)
    rows = _rows(out)
    assert Counter(r["diagnosis"] for r in rows) == {"CN": 4, "AD": 4}
    assert Counter((r["diagnosis"], r["site"]) for r in rows) == {
        ("CN", "site-1"): 2, ("CN", "site-2"): 2, ("AD", "site-1"): 2, ("AD", "site-2"): 2}


def test_lesion_masks_binary_inside_brain_and_boxed(cohort):
    from cogimg.data.boxes import read_boxes_json

    checked = 0
    for pipeline in ("lesions", "microbleeds"):
        for msk_path in sorted((cohort / "derivatives" / pipeline).glob("sub-*/anat/*_msk.nii.gz")):
            pid = msk_path.name.split("_")[0]
            msk_img = nib.load(msk_path)
            assert msk_img.get_data_dtype() == np.uint8
            mask = np.asarray(msk_img.dataobj)
            assert set(np.unique(mask)) <= {0, 1}
            brain = nib.load(cohort / modality_path(pid, "T1w")).get_fdata() > 0
            assert not (mask.astype(bool) & ~brain).any()
            inst = np.asarray(nib.load(msk_path.with_name(f"{pid}_dseg.nii.gz")).dataobj)
            assert np.array_equal(inst > 0, mask > 0)
            doc = read_boxes_json(msk_path.with_name(f"{pid}_boxes.json"))
            assert len(doc["boxes"]) == len(np.unique(inst[inst > 0]))
            for box in doc["boxes"]:
                x0, y0, z0, x1, y1, z1 = box["voxel"]
                idx = np.argwhere(inst == box["id"])
                assert idx.size and (idx.min(0) >= [x0, y0, z0]).all() and (idx.max(0) < [x1, y1, z1]).all()
            checked += int(mask.any())
    assert checked >= 1


def test_truth_maps_mark_the_changes(cohort):
    for row in _rows(cohort):
        pid = row["participant_id"]
        truth = json.loads((cohort / f"derivatives/truth/{pid}/{pid}_effects.json").read_text(encoding="utf-8"))
        maps = {k: nib.load(cohort / v).get_fdata() for k, v in truth["maps"].items()}
        assert maps["atrophy"].min() >= 0
        if row["diagnosis"] == "AD" or float(row["age"]) > 65:  # disease or age atrophy
            assert maps["atrophy"].max() > 0.05
        if row["diagnosis"] == "stroke":
            lesion = np.asarray(nib.load(cohort / truth["labels"]["lesions"]["mask"]).dataobj) > 0
            assert maps["lesion"][lesion].min() >= 0.45  # mask = fraction ≥ 0.5 (int16 rounding)
        if row["diagnosis"] == "PD":
            assert maps["dat"].max() > 0.2 and maps["pd"].max() > 0
        else:
            assert "dat" not in maps


def test_refuses_non_empty_out_and_overwrites_only_its_own_cohort(tmp_path, monkeypatch):
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("user data", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_cohort(out, 1, 0, spacing_mm=4.0, progress=False)
    with pytest.raises(FileExistsError, match="did not write"):  # --overwrite: still not ours
        generate_cohort(out, 1, 0, spacing_mm=4.0, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # a synth killed mid-way left its staging folder: the next run removes it
    stale = tmp_path / f".ours.{_dead_pid()}.0123456789ab.tmp"
    stale.mkdir()
    ours = tmp_path / "ours"
    generate_cohort(ours, 1, 0, spacing_mm=4.0, progress=False)
    assert not stale.exists()
    generate_cohort(ours, 1, 1, spacing_mm=4.0, progress=False, overwrite=True)  # our own: replaced
    assert (ours / "participants.tsv").is_file() and (ours / ".cogimg-output").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "ours"]  # no staging left behind
    monkeypatch.chdir(ours)
    with pytest.raises(ValueError, match="working directory"):  # --out . : refused up front
        generate_cohort(Path("."), 1, 0, spacing_mm=4.0, progress=False, overwrite=True)


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_crash_leaves_no_cohort(tmp_path, monkeypatch):
    from cogimg.data.synth import cohort as cohort_module

    def boom(plan, config):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cohort_module, "synthesize_subject", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_cohort(tmp_path / "c", 2, 0, spacing_mm=4.0, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"difficulty": "extreme"}, "difficulty"),
    ({"diseases": "stroke,flu"}, "diseases"),
    ({"spacing_mm": 0.1}, "spacing_mm"),
    ({"sites": 0}, "sites"),
    ({"site_confound": 1.5}, "site_confound"),
    ({"site_spread": -1.0}, "site_spread"),
    ({"proportions": {"XX": 1.0}}, "proportions"),
])
def test_bad_arguments_raise_one_clear_error(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_cohort(tmp_path / "c", 2, 0, progress=False, **kwargs)
    assert not (tmp_path / "c").exists()


def test_site_spread_scales_the_scanner_differences_only(tmp_path):
    def cohort_at(spread):
        out = generate_cohort(tmp_path / f"s{spread}", 2, 0, spacing_mm=4.0, diseases="ad",
                              site_spread=spread, progress=False)
        sites = json.loads((out / "derivatives" / "truth" / "sites.json").read_text(encoding="utf-8"))
        return sites, (out / "participants.tsv").read_text(encoding="utf-8")

    (one, table), (two, table_two) = cohort_at(1.0), cohort_at(2.0)
    assert table_two == table  # same subjects, diagnoses and sites
    for a, b in zip(one, two):
        assert np.log(b["gamma"]["T1w"]) == pytest.approx(2 * np.log(a["gamma"]["T1w"]), abs=2e-3)
        assert b["bias_amplitude"] - 0.05 == pytest.approx(2 * (a["bias_amplitude"] - 0.05), abs=1e-3)
        assert b["noise"] == a["noise"]  # noise follows the difficulty, not the spread


def test_cli_generates_and_previews(tmp_path):
    from cogimg.cli import main

    out = tmp_path / "c"
    rc = main(["synth", "--out", str(out), "--subjects", "5", "--spacing", "4", "--seed", "1",
               "--sites", "2", "--site-spread", "1.5", "--preview", "--no-progress"])
    assert rc == 0
    png = out / "preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme = (out / "README").read_text(encoding="utf-8")
    assert "--subjects 5 --seed 1 --spacing 4 --sites 2" in readme and "--site-spread 1.5" in readme
    png.unlink()
    assert main(["synth", "--out", str(out), "--preview", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").is_file()
    assert main(["synth", "--out", str(tmp_path / "empty")]) == 2  # neither --subjects nor a cohort
    assert main(["synth", "--out", str(tmp_path / "empty"), "--preview"]) == 2  # no cohort there
    assert main(["synth", "--out", str(out), "--subjects", "2", "--spacing", "4"]) == 2  # not empty


@pytest.mark.slow
def test_one_millimetre_works(tmp_path):
    out = generate_cohort(tmp_path / "c", 1, 0, spacing_mm=1.0, diseases="stroke", progress=False,
                          proportions={"CN": 0.0})
    img = nib.load(out / modality_path("sub-0001", "T1w"))
    assert img.shape == (197, 233, 189)
    assert np.count_nonzero(np.asarray(img.dataobj)) > 1_000_000  # ≈ 1.9 L of brain at 1 mL/1000
