"""``cogimg annotate``: pre-label masks and entropy maps on the native grid, per-subject
uncertainty, a ranked review list, refusal to overwrite; uncertainty maths; the
active-learning simulation loop."""

from __future__ import annotations

import json
import math
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from cogimg.cli import main
from cogimg.data.transforms import PreprocessingConfig
from cogimg.paradigms.lowlabel.active import labels_gain, simulate_active_learning
from cogimg.paradigms.lowlabel.annotate import annotate_dataset
from cogimg.paradigms.lowlabel.uncertainty import subject_uncertainty, uncertainty_maps
from cogimg.tasks.segmentation import SegmentationTask
from tests.paradigms.test_explain_command import save_checkpoint
from tests.tasks.conftest import SHAPE, build_easy_stroke_tree

SMALL = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}


def _ckpt(path, seed, dropout):
    torch.manual_seed(seed)
    task = SegmentationTask("unet", in_channels=2, num_classes=2, patch_size=(16, 16, 16),
                            model_kwargs={**SMALL, "dropout": dropout}, channels_last=False)
    config = PreprocessingConfig(spacing_mm=4.0, reference="dwi")
    return save_checkpoint(task.eval(), path, "stroke", ["dwi", "adc"], config)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """Two easy stroke scans (2 mm native grid) without ground truth, a dropout checkpoint
    and a second checkpoint without dropout."""
    tmp = tmp_path_factory.mktemp("annotate")
    root = build_easy_stroke_tree(tmp / "bids", n=2)
    shutil.rmtree(root / "derivatives")
    return root, _ckpt(tmp / "mc.ckpt", 0, 0.3), _ckpt(tmp / "plain.ckpt", 1, 0.0)


def test_annotate_writes_native_masks_entropy_and_a_ranked_review_list(unlabelled, tmp_path):
    root, mc, _ = unlabelled
    out = tmp_path / "out"
    review = annotate_dataset([mc], root, out, mc_samples=4)
    assert list(review["rank"]) == [1, 2]
    assert list(review["uncertainty"]) == sorted(review["uncertainty"], reverse=True)
    on_disk = pd.read_csv(out / "review_list.csv")
    assert list(on_disk["subject_id"]) == list(review["subject_id"])
    for sid in review["subject_id"]:
        native = nib.load(root / sid / "dwi" / f"{sid}_dwi.nii.gz")
        mask, entropy = (nib.load(out / f"{sid}_{k}.nii.gz") for k in ("pred_msk", "entropy"))
        for image in (mask, entropy):
            assert image.shape == SHAPE and np.allclose(image.affine, native.affine)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        values = np.asarray(entropy.dataobj)
        assert values.min() >= -1e-6 and values.max() <= math.log(2) + 1e-4 and values.max() > 0
        report = json.loads((out / f"{sid}_annotate.json").read_text(encoding="utf-8"))
        assert report["samples"] == 4 and report["subject_id"] == sid
        row = review.set_index("subject_id").loc[sid]
        assert report["uncertainty"] == pytest.approx(row["uncertainty"]) and report["uncertainty"] > 0


def test_annotate_refuses_to_overwrite_and_checks_its_inputs(unlabelled, tmp_path, capsys):
    root, mc, plain = unlabelled
    args = ["annotate", "--ckpt", str(mc), "--input", str(root), "--out", str(tmp_path / "out"),
            "--mc-samples", "2", "--device", "cpu"]
    assert main(args) == 0
    assert "1. sub-" in capsys.readouterr().out
    stamp = (tmp_path / "out" / "review_list.csv").stat().st_mtime_ns
    assert main(args) == 2  # outputs in the way, nothing run: one line on stderr, nothing replaced
    err = capsys.readouterr().err
    assert err.startswith("cogimg annotate: error: ") and "--overwrite" in err
    assert (tmp_path / "out" / "review_list.csv").stat().st_mtime_ns == stamp
    assert main([*args, "--overwrite"]) == 0
    with pytest.raises(ValueError, match="≥ 2 samples"):  # no dropout, one checkpoint
        annotate_dataset([plain], root, tmp_path / "plain")
    ensemble = annotate_dataset([plain, mc], root, tmp_path / "ensemble", mc_samples=1)
    assert json.loads((tmp_path / "ensemble" / f"{ensemble['subject_id'][0]}_annotate.json")
                      .read_text(encoding="utf-8"))["samples"] == 2
    with pytest.raises(ValueError, match="outside"):
        annotate_dataset([mc], root, root / "derivatives" / "prelabels")
    labelled = build_easy_stroke_tree(tmp_path / "labelled", n=1)
    with pytest.raises(ValueError, match="--include-labelled"):
        annotate_dataset([mc], labelled, tmp_path / "l1")
    scored = annotate_dataset([mc], labelled, tmp_path / "l2", mc_samples=2, include_labelled=True)
    report = json.loads((tmp_path / "l2" / f"{scored['subject_id'][0]}_annotate.json").read_text(encoding="utf-8"))
    assert "dice" in report["metrics"]


def test_uncertainty_maps_of_agreeing_and_disagreeing_samples():
    sure = torch.tensor([[1.0, 0.0]]).reshape(1, 2, 1, 1, 1).repeat(3, 1, 1, 1, 1)
    maps = uncertainty_maps(sure)
    assert float(maps["entropy"].max()) == 0 and float(maps["variance"].max()) == 0
    split = torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]).reshape(2, 2, 1, 1, 1)
    maps = uncertainty_maps(split)
    assert float(maps["entropy"]) == pytest.approx(math.log(2))
    assert float(maps["mutual_information"]) == pytest.approx(math.log(2))  # all disagreement
    assert float(maps["variance"]) == pytest.approx(0.25)
    scores = subject_uncertainty(maps, voxel_ml=0.064)
    assert scores["uncertain_volume_ml"] == pytest.approx(0.064)


def test_active_learning_by_uncertainty_picks_the_informative_subjects():
    # Toy problem: the validation metric is the share of "hard" subjects labelled; the model
    # is uncertain exactly about the hard ones it has not seen.
    pool = [f"s{i}" for i in range(12)]
    hard = set(pool[8:])

    def fit_and_score(labelled, unlabelled):
        metric = len(hard & set(labelled)) / len(hard)
        return metric, {i: (1.0 if i in hard else 0.1) for i in unlabelled}

    runs = {s: simulate_active_learning(pool, pool[:2], fit_and_score, rounds=2, per_round=2,
                                        strategy=s, seed=0) for s in ("uncertainty", "random")}
    first = runs["uncertainty"].iloc[0]["added"].split(";")
    assert set(first) <= hard and len(first) == 2
    assert list(runs["uncertainty"]["n_labelled"]) == [2, 4, 6]
    assert labels_gain(runs["uncertainty"]) == {"final_metric": 1.0, "gain_per_label": 0.25,
                                                "first_round_gain_per_label": 0.25}
    assert labels_gain(runs["random"])["final_metric"] < 1.0
    again = simulate_active_learning(pool, pool[:2], fit_and_score, 2, 2, "random", seed=0)
    assert again.equals(runs["random"])
