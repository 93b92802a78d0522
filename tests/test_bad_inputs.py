"""Catalogue of hostile and broken inputs: every row runs a real ``cogimg`` command in-process.

Each row builds its bad input in ``tmp_path`` from a small synthetic volume (or a real, tiny
checkpoint of an untrained U-Net in the format ``trainer.save_checkpoint`` writes), runs
``cogimg.cli.main`` and checks the contract: the exit code, one stderr line naming the file or
key, no traceback, and no file written outside the output folder.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cogimg.cli import main
from cogimg.data.transforms import PreprocessingConfig
from cogimg.tasks.segmentation import SegmentationTask

SHAPE = (32, 32, 32)
AFFINE = np.array([[2.0, 0, 0, -32], [0, 2.0, 0, -32], [0, 0, 2.0, -32], [0, 0, 0, 1]])
SMALL_UNET = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def volume(seed: int = 0) -> np.ndarray:
    """A bright ball on noise, ``SHAPE`` float32."""
    grid = np.indices(SHAPE).transpose(1, 2, 3, 0)
    ball = (np.linalg.norm(grid - 16, axis=-1) <= 10).astype(np.float32)
    return ball + np.random.default_rng(seed).normal(0, 0.1, SHAPE).astype(np.float32)


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def write_checkpoint(path: Path, modalities: list[str], preset: str = "stroke",
                     reference: str | None = None) -> Path:
    """A cogimg checkpoint (the keys ``Trainer.save_checkpoint`` writes for a task fitted on a
    cogimg datamodule) of an untrained small U-Net reading ``modalities``."""
    task = SegmentationTask("unet", in_channels=len(modalities), num_classes=2,
                            patch_size=(16, 16, 16), model_kwargs=SMALL_UNET)
    state = {"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams),
             "PatchDataModule": {"preset": preset, "modalities": list(modalities),
                                 "preprocessing": PreprocessingConfig(reference=reference).to_dict()}}
    task.on_save_checkpoint(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


# --------------------------------------------------------------------------- bad files
def truncated(path: Path, fraction: float = 0.7) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def huge_header(path: Path) -> Path:
    """A NIfTI header claiming 4000³ float32 voxels (256 GB) in front of a few bytes."""
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.float32)
    header.set_qform(AFFINE, code=1)
    header.set_sform(AFFINE, code=1)
    raw = header.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def sform_qform_disagree(path: Path) -> Path:
    """sform = ``AFFINE``; qform shifted by 30 mm per axis (both codes set)."""
    image = nib.Nifti1Image(volume(), AFFINE)
    shifted = AFFINE.copy()
    shifted[:3, 3] += 30.0
    image.set_qform(shifted, code=1)
    image.set_sform(AFFINE, code=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    return path


def bad_nifti(kind: str, folder: Path) -> Path:
    """The file of one bad-NIfTI row (a lone image: for one-modality checkpoints)."""
    path = folder / "scan.nii.gz"
    if kind == "truncated":
        return truncated(save(path, volume()))
    if kind == "truncated_nii":
        return truncated(save(folder / "scan.nii", volume()))
    if kind == "nan":
        data = volume()
        data[:4] = np.nan
        return save(path, data)
    if kind == "inf":
        data = volume()
        data[5, 5, 5] = np.inf
        return save(path, data)
    if kind == "2d":
        return save(path, volume()[:, :, 16])
    if kind == "2d_slab":
        return save(path, volume()[:, :, 16:17])
    if kind == "4d":
        return save(path, np.stack([volume(0), volume(1)], axis=-1))
    if kind == "singular":  # zero spacing along z: an sform nibabel cannot decompose
        image = nib.Nifti1Image(volume(), None)
        image.header.set_sform(np.diag([2.0, 2.0, 0.0, 1.0]), code=1)
        image.header["pixdim"][1:4] = [2.0, 2.0, 0.0]
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(image, str(path))
        return path
    if kind == "huge":
        return huge_header(path)
    raise ValueError(kind)


# --------------------------------------------------------------------------- running
@dataclass
class Outcome:
    code: int | None
    stderr: str
    stdout: str
    traceback: bool
    outside: list[str]


def run_cli(argv: list[str], tmp_path: Path, out: Path, capsys) -> Outcome:
    """Run ``cogimg argv`` in-process; files created under ``tmp_path`` outside ``out``
    (besides those present before) are listed in ``outside``."""
    before = {p for p in tmp_path.rglob("*")}
    capsys.readouterr()
    escaped = False
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 -- an escaped exception is a traceback for the user
        code, escaped = None, True
    captured = capsys.readouterr()
    new = [p for p in tmp_path.rglob("*") if p not in before and p.is_file()]
    outside = [str(p) for p in new if out not in p.parents]
    return Outcome(code, captured.err, captured.out, escaped or "Traceback" in captured.err, outside)


def error_lines(text: str) -> list[str]:
    """stderr lines that are not warnings (Python warnings print the source line too)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return [line for line in lines if "error" in line.lower() or "FAILED" in line]


def classify(outcome: Outcome, expected: int, names: str) -> str:
    """``clear`` (the contract), ``traceback``, ``silent`` (exit 0 where an error was due),
    ``wrote-outside`` or ``unclear`` (wrong code, several lines, or the name missing)."""
    if outcome.traceback:
        return "traceback"
    if outcome.outside:
        return "wrote-outside"
    if expected and outcome.code == 0:
        return "silent"
    if outcome.code != expected:
        return "unclear"
    if expected:
        lines = error_lines(outcome.stderr)
        if len(lines) != 1 or names not in lines[0]:
            return "unclear"
    return "clear"


# --------------------------------------------------------------------------- rows
NIFTI_ROWS = ["truncated", "truncated_nii", "nan", "inf", "2d", "2d_slab", "4d", "singular", "huge"]


@pytest.fixture(scope="module")
def one_channel_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "dwi.ckpt", ["dwi"])


@pytest.fixture(scope="module")
def stroke_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "stroke.ckpt", ["dwi", "adc"])


@pytest.mark.parametrize("command", ["predict", "explain", "annotate", "clinical"])
@pytest.mark.parametrize("kind", NIFTI_ROWS)
def test_a_bad_nifti_is_one_clear_error_before_any_compute(kind, command, one_channel_ckpt,
                                                          tmp_path, capsys):
    scan = bad_nifti(kind, tmp_path / "in")
    out = tmp_path / "out"
    argv = {"predict": ["predict", "--ckpt", str(one_channel_ckpt)],
            "explain": ["explain", "--ckpt", str(one_channel_ckpt), "--method", "gradcam"],
            "annotate": ["annotate", "--ckpt", str(one_channel_ckpt), str(one_channel_ckpt)],
            "clinical": ["clinical", "--seg-ckpt", str(one_channel_ckpt), "--no-progress"]}[command]
    outcome = run_cli([*argv, "--input", str(scan), "--out", str(out), "--device", "cpu"],
                      tmp_path, out, capsys)
    assert classify(outcome, 1, str(scan)) == "clear", outcome
    if command != "clinical":  # clinical lists the failed input in out/summary.json
        assert not out.exists() or not any(out.iterdir())


def test_a_scan_whose_sform_and_qform_disagree_is_predicted_on_the_sform(one_channel_ckpt,
                                                                         tmp_path, capsys):
    scan = sform_qform_disagree(tmp_path / "in" / "scan.nii.gz")
    out = tmp_path / "out"
    outcome = run_cli(["predict", "--ckpt", str(one_channel_ckpt), "--input", str(scan),
                       "--out", str(out), "--device", "cpu"], tmp_path, out, capsys)
    assert classify(outcome, 0, str(scan)) == "clear", outcome
    mask = nib.load(out / "scan_pred_msk.nii.gz")
    np.testing.assert_allclose(mask.affine, AFFINE)  # the sform, which `cogimg check` validates
    np.testing.assert_allclose(mask.header.get_sform(), AFFINE)
    assert mask.shape == SHAPE


# --------------------------------------------------------------------------- checkpoints
CKPT_ROWS = {
    "absolute modality": ({"modalities": ["{outside}/x"]}, "modalities"),
    "parent modality": ({"modalities": ["../../x"]}, "modalities"),
    "parent preset": ({"preset": "../../etc"}, "preset"),
    "absolute reference": ({"reference": "{outside}/x"}, "reference"),
}


@pytest.mark.parametrize("command", ["predict", "clinical"])
@pytest.mark.parametrize("row", sorted(CKPT_ROWS))
def test_a_checkpoint_value_that_is_not_a_known_name_is_refused(row, command, tmp_path, capsys):
    values, key = CKPT_ROWS[row]
    outside = tmp_path / "outside"
    values = {k: [v.format(outside=outside) for v in vs] if isinstance(vs, list)
              else vs.format(outside=outside) for k, vs in values.items()}
    ckpt = write_checkpoint(tmp_path / "evil.ckpt", **{"modalities": ["dwi"], **values})
    scan = save(tmp_path / "in" / "scan.nii.gz", volume())
    out = tmp_path / "out"
    argv = (["predict", "--ckpt", str(ckpt)] if command == "predict"
            else ["clinical", "--seg-ckpt", str(ckpt), "--no-progress"])
    outcome = run_cli([*argv, "--input", str(scan), "--out", str(out), "--device", "cpu"],
                      tmp_path, out, capsys)
    assert classify(outcome, 2, "evil.ckpt") == "clear", outcome  # an unusable argument: nothing run
    assert key in error_lines(outcome.stderr)[0]
    assert not outside.exists()
    assert not out.exists() or not any(out.iterdir())


# --------------------------------------------------------------------------- URLs
@pytest.mark.parametrize("command", ["fit", "validate", "test"])
@pytest.mark.parametrize("where", ["cli", "yaml", "yaml-equals"])
def test_a_url_checkpoint_is_refused_before_lightning(command, where, tmp_path, capsys):
    url = "http://127.0.0.1:9/evil.ckpt"
    config = tmp_path / "cfg.yaml"
    config.write_text("trainer:\n  max_epochs: 1\n" + (f"ckpt_path: {url}\n" if where != "cli" else ""),
                      encoding="utf-8")
    argv = [command, f"--config={config}"] if where == "yaml-equals" else [command, "-c", str(config)]
    if where == "cli":
        argv += ["--ckpt_path", url]
    out = tmp_path / "out"
    outcome = run_cli(argv, tmp_path, out, capsys)
    assert classify(outcome, 2, url) == "clear", outcome


def test_a_url_ckpt_path_given_with_equals_is_refused(tmp_path, capsys):
    url = "https://example.org/evil.ckpt"
    outcome = run_cli(["validate", f"--ckpt_path={url}"], tmp_path, tmp_path / "out", capsys)
    assert classify(outcome, 2, url) == "clear", outcome


# --------------------------------------------------------------------------- accepted spellings
def write_itk(path: Path, data: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> Path:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_an_itk_case_folder_is_predicted(suffix, stroke_ckpt, tmp_path, capsys):
    case = tmp_path / "in" / "case1"
    write_itk(case / f"dwi{suffix}", volume(0))
    write_itk(case / f"ADC{suffix}", volume(1))
    out = tmp_path / "out"
    outcome = run_cli(["predict", "--ckpt", str(stroke_ckpt), "--input", str(case),
                       "--out", str(out), "--device", "cpu"], tmp_path, out, capsys)
    assert classify(outcome, 0, "") == "clear", outcome
    mask = nib.load(out / "case1_pred_msk.nii.gz")
    assert mask.shape == SHAPE
    np.testing.assert_allclose(np.abs(np.diag(mask.affine))[:3], [2.0, 2.0, 2.0])


def test_a_truncated_mha_is_one_clear_error(stroke_ckpt, tmp_path, capsys):
    case = tmp_path / "in" / "case1"
    truncated(write_itk(case / "dwi.mha", volume(0)))
    write_itk(case / "adc.mha", volume(1))
    out = tmp_path / "out"
    outcome = run_cli(["predict", "--ckpt", str(stroke_ckpt), "--input", str(case),
                       "--out", str(out), "--device", "cpu"], tmp_path, out, capsys)
    assert classify(outcome, 1, str(case / "dwi.mha")) == "clear", outcome


def stroke_tree(root: Path, names: dict[str, str]) -> Path:
    """One stroke participant; ``names``: modality file suffix -> datatype folder."""
    for i, (suffix, datatype) in enumerate(names.items()):
        save(root / "sub-01" / datatype / f"sub-01_{suffix}", volume(i))
    (root / "participants.tsv").write_text("participant_id\tdiagnosis\tsite\nsub-01\tstroke\tA\n",
                                           encoding="utf-8")
    for name in ("dataset_description.json", "README", "LICENSE", "CHANGES"):
        (root / name).write_text("{}\n" if name.endswith(".json") else "text\n", encoding="utf-8")
    return root


def test_check_reads_isles_spellings_without_warnings(tmp_path, capsys):
    root = stroke_tree(tmp_path / "ds", {"dwi.nii.gz": "dwi", "adc.nii.gz": "dwi",
                                         "flair.nii.gz": "anat"})
    report = tmp_path / "out" / "check.json"
    outcome = run_cli(["check", str(root), "--out", str(report)], tmp_path, tmp_path / "out", capsys)
    assert classify(outcome, 0, "") == "clear", outcome
    import json

    summary = json.loads(report.read_text())
    assert sorted(summary["modalities"]) == ["FLAIR", "adc", "dwi"]
    assert summary["problems"] == [] and all("warn" not in s["reason"] for s in summary["skipped"])


def test_check_makes_a_presets_missing_modality_an_error(tmp_path, capsys):
    root = stroke_tree(tmp_path / "ds", {"dwi.nii.gz": "dwi"})
    outcome = run_cli(["check", str(root)], tmp_path, tmp_path / "out", capsys)
    assert outcome.code == 1 and not outcome.traceback
    assert "missing required modality 'adc' for sub-01" in outcome.stdout
    assert "preset stroke" in outcome.stdout


def test_a_denied_class_path_in_a_config_is_an_error_and_runs_nothing(tmp_path, capsys):
    """jsonargparse's import-path denylist is enforced (an error, not a warning)."""
    marker = tmp_path / "marker"
    config = tmp_path / "cfg.yaml"
    config.write_text("trainer:\n  callbacks:\n    - class_path: subprocess.Popen\n"
                      f"      init_args:\n        args: [touch, {marker}]\n", encoding="utf-8")
    outcome = run_cli(["fit", "-c", str(config)], tmp_path, tmp_path / "out", capsys)
    assert outcome.code == 2 and not outcome.traceback
    assert "'subprocess' entry of the import path denylist" in outcome.stderr
    assert not marker.exists()
    from jsonargparse._common import get_parsing_setting

    assert get_parsing_setting("import_paths_enforced")


def test_check_warns_when_sform_and_qform_disagree(tmp_path, capsys):
    root = stroke_tree(tmp_path / "ds", {"dwi.nii.gz": "dwi", "adc.nii.gz": "dwi"})
    sform_qform_disagree(root / "sub-01" / "dwi" / "sub-01_dwi.nii.gz")
    outcome = run_cli(["check", str(root)], tmp_path, tmp_path / "out", capsys)
    assert outcome.code == 0 and not outcome.traceback
    assert "sub-01_dwi.nii.gz: sform and qform disagree by up to 30 mm" in outcome.stdout


@pytest.mark.parametrize("kind", ["truncated_nii", "2d_slab", "singular", "huge"])
def test_check_rejects_what_the_gate_rejects(kind, tmp_path, capsys):
    root = stroke_tree(tmp_path / "ds", {"dwi.nii.gz": "dwi", "adc.nii.gz": "dwi"})
    bad = bad_nifti(kind, tmp_path / "bad")
    target = root / "sub-01" / "dwi" / ("sub-01_adc" + ("".join(bad.suffixes)))
    (root / "sub-01" / "dwi" / "sub-01_adc.nii.gz").unlink()
    bad.rename(target)
    outcome = run_cli(["check", str(root)], tmp_path, tmp_path / "out", capsys)
    assert outcome.code == 1 and not outcome.traceback
    assert f"error: sub-01/dwi/{target.name}" in outcome.stdout


# --------------------------------------------------------------------------- outputs in the way
def _out_in_the_way(kind: str, tmp_path: Path) -> tuple[Path, str]:
    """An ``--out`` that cannot take the outputs, and the path the message must name."""
    out = tmp_path / "out"
    if kind == "a file":
        out.write_text("not a folder", encoding="utf-8")
        return out, str(out)
    out.mkdir()
    if kind == "read-only":
        out.chmod(0o500)
        return out, str(out)
    raise ValueError(kind)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_out_is_nothing_run(one_channel_ckpt, tmp_path, capsys):
    out, name = _out_in_the_way("read-only", tmp_path)
    scan = save(tmp_path / "in" / "scan.nii.gz", volume())
    outcome = run_cli(["predict", "--ckpt", str(one_channel_ckpt), "--input", str(scan), "--out",
                       str(out), "--device", "cpu"], tmp_path, out, capsys)
    out.chmod(0o700)
    assert classify(outcome, 2, name) == "clear", outcome


@pytest.mark.parametrize("command", ["predict", "clinical"])
def test_an_out_that_is_a_file_is_nothing_run(command, one_channel_ckpt, tmp_path, capsys):
    out, name = _out_in_the_way("a file", tmp_path)
    scan = save(tmp_path / "in" / "scan.nii.gz", volume())
    argv = (["predict", "--ckpt", str(one_channel_ckpt)] if command == "predict"
            else ["clinical", "--seg-ckpt", str(one_channel_ckpt), "--no-progress"])
    outcome = run_cli([*argv, "--input", str(scan), "--out", str(out), "--device", "cpu"],
                      tmp_path, out, capsys)
    assert classify(outcome, 2, name) == "clear", outcome
    assert out.read_text(encoding="utf-8") == "not a folder"


def test_a_case_folder_without_a_modality_the_model_reads_is_one_clear_error(stroke_ckpt, tmp_path,
                                                                              capsys):
    case = tmp_path / "in" / "case1"
    save(case / "dwi.nii.gz", volume(0))  # the model reads dwi and adc
    out = tmp_path / "out"
    outcome = run_cli(["predict", "--ckpt", str(stroke_ckpt), "--input", str(case),
                       "--out", str(out), "--device", "cpu"], tmp_path, out, capsys)
    assert classify(outcome, 1, str(case)) == "clear", outcome
    assert "adc" in error_lines(outcome.stderr)[0]


def test_a_participant_without_images_is_an_error_in_check(tmp_path, capsys):
    root = stroke_tree(tmp_path / "ds", {"dwi.nii.gz": "dwi", "adc.nii.gz": "dwi"})
    with (root / "participants.tsv").open("a", encoding="utf-8") as table:
        table.write("sub-02\tstroke\tA\n")
    outcome = run_cli(["check", str(root)], tmp_path, tmp_path / "out", capsys)
    assert outcome.code == 1 and not outcome.traceback, outcome
    assert "sub-02" in outcome.stdout + outcome.stderr
