"""Functional-data validation: each bad input gives one error naming its file, through the
library (:func:`scan_func`) and through ``cogimg check``."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from cogimg.cli import main
from cogimg.data.func import FuncDataError, find_bold_runs, scan_func
from cogimg.data.func.checks import func_summary

PRE = "derivatives/fmriprep/{0}/func/{0}_task-rest_space-MNI152NLin2009cAsym_desc-preproc_bold"


def _resave(path, data, affine, tr=None):
    img = nib.Nifti1Image(data, affine)
    if tr is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (tr,))
    path.unlink()  # the raw file is hard-linked: never write through the link
    nib.save(img, path)


@pytest.fixture
def bad_tree(func_tree):
    """sub-01: a 3D "bold"; sub-02: no TR anywhere; sub-03 untouched."""
    one = func_tree / (PRE.format("sub-01") + ".nii.gz")
    img = nib.load(one)
    _resave(one, np.asarray(img.dataobj)[..., 0], img.affine)
    two = func_tree / (PRE.format("sub-02") + ".nii.gz")
    img = nib.load(two)
    _resave(two, np.asarray(img.dataobj), img.affine, tr=0.0)
    (func_tree / (PRE.format("sub-02") + ".json")).unlink()
    return func_tree


@pytest.fixture
def shifted_atlas(func_tree, tmp_path):
    """The tree's parcellation moved by 4 mm (same shape, another grid)."""
    src = func_tree / "derivatives/cogimg_atlas"
    img = nib.load(src / "atlas-cogimg_res-4mm_dseg.nii.gz")
    affine = img.affine.copy()
    affine[0, 3] += 4.0
    atlas = tmp_path / "shifted_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine), atlas)
    table = tmp_path / "shifted_dseg.tsv"
    shutil.copy(src / "atlas-cogimg_dseg.tsv", table)
    return atlas, table


def test_library_names_each_bad_file(bad_tree):
    runs, problems = scan_func(bad_tree)
    errors = {p.path_or_key: p.message for p in problems if p.severity == "error"}
    assert [r.subject for r in runs] == ["sub-03"]
    key1, key2 = PRE.format("sub-01") + ".nii.gz", PRE.format("sub-02") + ".nii.gz"
    assert set(errors) == {key1, key2}
    assert "must be 4D (X, Y, Z, T)" in errors[key1] and "(24, 6, 6)" in errors[key1]
    assert "no repetition time" in errors[key2] and "RepetitionTime" in errors[key2]
    with pytest.raises(FuncDataError, match="sub-01_task-rest_space"):
        find_bold_runs(bad_tree)


def test_library_checks_tr_agreement_volumes_and_confound_rows(func_tree):
    sidecar = func_tree / (PRE.format("sub-01") + ".json")
    sidecar.write_text(json.dumps({"RepetitionTime": 2.5}))
    conf = func_tree / "derivatives/fmriprep/sub-02/func/sub-02_task-rest_desc-confounds_timeseries.tsv"
    conf.write_text("".join(conf.read_text().splitlines(keepends=True)[:-3]))  # 117 rows
    _, problems = scan_func(func_tree, min_volumes=200)
    msgs = [str(p) for p in problems]
    assert any(PRE.format("sub-01") in m and "2 s in the header but 2.5 s in" in m for m in msgs)
    assert any(m.startswith(f"error: {conf.relative_to(func_tree)}: 117 confound rows but the BOLD "
                            "run has 120 volumes") for m in msgs)
    assert sum("120 volumes, fewer than the minimum 200" in m for m in msgs) == 3


def test_library_atlas_on_another_grid(func_tree, shifted_atlas):
    func = func_summary(func_tree, *shifted_atlas)
    errors = [p for p in func["problems"] if p.severity == "error"]
    assert len(errors) == 3 and func["runs"] == 0 and not func["ok"]
    assert errors[0].path_or_key == str(shifted_atlas[0])
    assert "not on the grid of " + PRE.format("sub-01") in errors[0].message
    assert "4 mm in translation" in errors[0].message


def test_cogimg_check_reports_each_bad_file(bad_tree, shifted_atlas, capsys):
    code = main(["check", str(bad_tree), "--preset", "none", "--atlas", str(shifted_atlas[0]),
                 "--atlas-labels", str(shifted_atlas[1])])
    out = capsys.readouterr().out
    assert code == 1, out
    assert f"error: {PRE.format('sub-01')}.nii.gz: a BOLD run must be 4D" in out
    assert f"error: {PRE.format('sub-02')}.nii.gz: no repetition time" in out
    assert f"error: {shifted_atlas[0]}: parcellation is not on the grid of {PRE.format('sub-03')}" in out
    assert "Functional (fmriprep): 0 usable run(s) of 3 file(s)" in out
    assert out.rstrip().endswith("FAILED: fix the errors above")


def test_cogimg_check_passes_a_good_tree_and_lists_high_motion(func_tree, capsys):
    code = main(["check", str(func_tree), "--preset", "none"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Functional (fmriprep): 3 usable run(s) of 3 file(s)" in out
    assert "parcellation: " in out and "(11 regions)" in out
    assert "high motion (flagged, kept): sub-03" in out
    assert "warning: derivatives/fmriprep/sub-03/func/sub-03_task-rest_desc-confounds_timeseries.tsv: " \
           "high motion in sub-03" in out
