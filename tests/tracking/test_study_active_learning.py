"""Active learning and segmentation label efficiency as studies: the labelling rounds against a
hand computation (uncertainty picks the top-k uncertain pool participants, never a labelled or
held-out one; random is a seeded draw; both start from the same set), the MC-dropout pool score
against a hand-computed entropy, the curve figure's table against hand means, option errors,
and both tiny presets end to end through ``cogimg study`` (a rerun trains nothing)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchio as tio
import yaml
from torch import nn

from cogimg.cli import main
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.study_active_learning import (
    CURVE_COLUMNS,
    check_options,
    initial_labelled,
    labelling_rounds,
    pool_uncertainty,
)
from cogimg.tracking.study_figures_active import (
    active_learning_figure,
    arm_curves,
    curve_table,
    gain_table,
)
from cogimg.tracking.study_spec import load_study
from tests.tracking.study_checks import assert_rerun_runs_nothing

ROOT = Path(__file__).resolve().parents[2]
POOL = [f"p{i}" for i in range(8)]
#: pool uncertainties (p5 > p2 > p7 > p0 > …) and held-out participants more uncertain than any
SCORES = {"p0": 0.4, "p1": 0.1, "p2": 0.8, "p3": 0.2, "p4": 0.3, "p5": 0.9, "p6": 0.05, "p7": 0.6,
          "val1": 5.0, "test1": 6.0}


def _rounds(strategy: str, seed: int = 3):
    calls = []

    def fit_round(r, labelled, unlabelled, final):
        calls.append((r, list(labelled), list(unlabelled), final))
        # scores for every participant, labelled and held-out ones included: none may be picked
        return 0.1 * len(labelled), dict(SCORES)

    options = {"strategy": strategy, "initial": 2, "per_round": 2, "rounds": 2, "mc_samples": 2}
    return labelling_rounds(POOL, options, seed, fit_round, "arm"), calls


def test_uncertainty_rounds_label_the_most_uncertain_pool_participants():
    curve, calls = _rounds("uncertainty")
    initial = sorted(np.random.default_rng(3).choice(POOL, size=2, replace=False).tolist())
    assert initial_labelled(POOL, 2, 3) == initial
    # by hand: the two most uncertain unlabelled pool participants, then the next two
    ranked = [p for p in ("p5", "p2", "p7", "p0", "p4", "p3", "p1", "p6") if p not in initial]
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert curve["n_labelled"].tolist() == [2, 4, 6] and curve["round"].tolist() == [0, 1, 2]
    assert curve["added"].tolist() == [";".join(ranked[:2]), ";".join(ranked[2:4]), ""]  # most first
    assert curve["labelled"].iloc[2] == ";".join(sorted([*initial, *ranked[:4]]))
    assert curve["val_dice"].tolist() == pytest.approx([0.2, 0.4, 0.6])
    assert [c[3] for c in calls] == [False, False, True]  # only the last fit is the arm's run
    for _, labelled, unlabelled, _ in calls:
        assert sorted(labelled + unlabelled) == POOL and not set(labelled) & set(unlabelled)
    assert not {"val1", "test1"} & set(";".join(curve["labelled"]).split(";"))


def test_random_rounds_start_from_the_same_set_and_draw_from_the_pool_only():
    uncertain, _ = _rounds("uncertainty")
    curve, calls = _rounds("random")
    again, _ = _rounds("random")
    assert curve["labelled"].iloc[0] == uncertain["labelled"].iloc[0]  # the same initial set
    pd.testing.assert_frame_equal(curve.drop(columns="round_s"), again.drop(columns="round_s"))
    labelled = curve["labelled"].iloc[2].split(";")
    assert len(set(labelled)) == 6 and set(labelled) <= set(POOL)
    # the draw of simulate_active_learning: rng(seed) over the sorted unlabelled pool
    rng = np.random.default_rng(3)
    first = sorted(rng.choice(sorted(calls[0][2]), size=2, replace=False).tolist())
    assert curve["added"].iloc[0] == ";".join(first)


def test_rounds_and_options_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="arm 'arm': 2 initial \\+ 4 rounds × 2 = 10 .* has 8"):
        labelling_rounds(POOL, {"strategy": "random", "initial": 2, "per_round": 2, "rounds": 4},
                         0, lambda *a: (0.0, {}), "arm")
    with pytest.raises(ValueError, match=r"arm 'x': options \['round'\] unknown"):
        check_options({"name": "x", "options": {"round": 3}})
    with pytest.raises(ValueError, match="arm 'x': options.strategy 'entropy'"):
        check_options({"name": "x", "options": {"strategy": "entropy"}})
    with pytest.raises(ValueError, match="arm 'x': options.mc_samples must be an integer ≥ 2"):
        check_options({"name": "x", "options": {"mc_samples": 1}})
    assert check_options({"name": "x", "options": {"strategy": "random"}})["rounds"] == 2


class _Fixed(nn.Module):
    """A 'segmentation task' whose MC-dropout passes all give the same probabilities: foreground
    0.5 in the first half of the volume along x, 0 elsewhere."""

    def __init__(self, dropout: float):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(dropout))
        self.device = torch.device("cpu")

    def predict_volume(self, image):
        fg = torch.zeros(image.shape[0], 1, *image.shape[2:])
        fg[:, :, : image.shape[2] // 2] = 0.5
        return torch.cat([1 - fg, fg], 1)


def _subject(pid: str, sid: str) -> tio.Subject:
    image = tio.ScalarImage(tensor=torch.rand(1, 4, 2, 2), affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    return tio.Subject(DWI=image, ADC=tio.ScalarImage(tensor=torch.rand(1, 4, 2, 2)),
                       participant_id=pid, subject_id=sid)


def test_pool_uncertainty_is_annotates_mean_entropy_per_participant():
    subjects = [_subject("p1", "p1_a"), _subject("p1", "p1_b"), _subject("p2", "p2_a")]
    scores = pool_uncertainty(_Fixed(0.1), subjects, ("DWI", "ADC"), samples=3)
    # half the voxels at p = (0.5, 0.5): entropy ln 2 nats; the others 0
    assert scores == pytest.approx({"p1": 0.5 * math.log(2), "p2": 0.5 * math.log(2)})
    with pytest.raises(ValueError, match="needs a model with dropout"):
        pool_uncertainty(_Fixed(0.0), subjects, ("DWI", "ADC"), samples=3)


def test_active_learning_figure_tables_match_hand_means(tmp_path):
    curves = {("unc", 0): [0.2, 0.5, 0.6], ("unc", 1): [0.4, 0.5, 0.8], ("rnd", 0): [0.2, 0.3, 0.4]}
    for (arm, seed), dice in curves.items():
        folder = tmp_path / "runs" / arm / f"seed{seed}"
        folder.mkdir(parents=True)
        pd.DataFrame({"round": [0, 1, 2], "n_labelled": [2, 4, 6], "strategy": arm, "val_dice": dice,
                      "added": ["a;b", "c;d", ""]}).to_csv(folder / "active_learning.csv", index=False)
    study = {"arms": [{"name": "unc", "runner": "active_learning"}, {"name": "rnd", "runner": "active_learning"},
                      {"name": "fit_arm", "runner": "fit"}]}
    table = curve_table(arm_curves(tmp_path, study)).set_index(["arm", "n_labelled"])
    assert table.loc[("unc", 2), "mean_dice"] == pytest.approx(0.3)
    assert table.loc[("unc", 6), "std_dice"] == pytest.approx(0.1)  # population SD of 0.6, 0.8
    assert table.loc[("rnd", 4), "n_seeds"] == 1 and len(table) == 6
    gains = gain_table(arm_curves(tmp_path, study)).set_index("arm")
    # seed 0: (0.6 − 0.2) / 4, seed 1: (0.8 − 0.4) / 4; first round: (0.3, 0.1) / 2
    assert gains.loc["unc", "gain_per_label"] == pytest.approx(0.1)
    assert gains.loc["unc", "first_round_gain_per_label"] == pytest.approx(0.1)
    assert gains.loc["rnd", "final_dice"] == pytest.approx(0.4)
    written = active_learning_figure(tmp_path, study, tmp_path / "figures")
    assert [p.name for p in written] == ["active_learning.png"]
    assert "| unc | unc | 6 | 0.700 | 0.100 | 2 |" in (tmp_path / "figures" / "active_learning.md").read_text()
    assert active_learning_figure(tmp_path, {"arms": study["arms"][2:]}, tmp_path / "f2") == []


STUDIES = ("label_efficiency_seg", "active_learning")


@pytest.fixture(scope="module")
def tiny_stroke_cohort(tmp_path_factory) -> Path:
    """The two tiny presets' one stroke cohort, synthesised once."""
    from cogimg.data.synth import generate_cohort

    cohorts = [load_study(ROOT / "studies" / f"{name}.yaml", "tiny")["cohort"] for name in STUDIES]
    assert cohorts[0] == cohorts[1], "the tiny presets must share one cohort"
    cohort = dict(cohorts[0])
    root = tmp_path_factory.mktemp("tiny_stroke") / "data"
    generate_cohort(root, cohort.pop("subjects"), cohort.pop("seed"), workers=1, progress=False, **cohort)
    return root


@pytest.mark.study
@pytest.mark.slow  # a tiny stroke cohort, four (label efficiency) or six (active learning) 2-step fits
@pytest.mark.parametrize("name", STUDIES)
def test_tiny_study_runs_end_to_end_and_resumes(name, tiny_stroke_cohort, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COGIMG_WANDB", "off")
    path, out = ROOT / "studies" / f"{name}.yaml", tmp_path / name
    out.mkdir()
    (out / "data").symlink_to(tiny_stroke_cohort, target_is_directory=True)
    study = load_study(path, "tiny")
    assert main(["study", str(path), "--out", str(out), "--preset", "tiny", "--accelerator", "cpu",
                 "--workers", "1"]) == 0
    assert "| arm a | arm b | metric |" in capsys.readouterr().out
    for arm in study["arms"]:
        runs, skipped = find_runs(out / "runs" / arm["name"] / "seed0", stage="test")
        assert len(runs) == 1 and not skipped, (arm["name"], skipped)
        assert runs[0].kind == "segmentation" and runs[0].manifest["experiment"] == arm["name"]
    table = pd.read_csv(out / "comparisons.csv")
    assert list(table["arm_b"]) == [c["b"] for c in study["comparisons"]]
    assert (table["metric"] == "dice").all() and table["note"].isna().all()
    assert table[["mean_a", "mean_b", "n_subjects"]].notna().all().all()
    for figure in study["figures"]:
        assert (out / "figures" / f"{figure}.png").is_file(), figure
    if name == "label_efficiency_seg":
        recovery = pd.read_csv(out / "figures" / "recovery_share.csv")
        assert list(recovery["arm"]) == ["mean_teacher_010", "pseudo_label_010"]
        assert set(recovery["metric"]) == {"dice"} and set(recovery["stage"]) == {"test"}
        assert np.allclose(recovery["mean_low"], table.loc[0, "mean_a"])
    else:
        curves = {a: pd.read_csv(out / "runs" / a / "seed0" / "active_learning.csv")
                  for a in ("uncertainty", "random")}
        assert all(c["n_labelled"].tolist() == [2, 4, 6] for c in curves.values())
        assert curves["uncertainty"]["labelled"].iloc[0] == curves["random"]["labelled"].iloc[0]
        split = yaml.safe_load(next((out / "cache" / "splits").glob("*.json")).read_text())
        held_out = set(split["test"]) | set(split["folds"][0]["val"])
        for c in curves.values():
            labelled = set(c["labelled"].iloc[-1].split(";"))
            assert len(labelled) == 6 and labelled <= set(split["folds"][0]["train"])
            assert not labelled & held_out
        figure = pd.read_csv(out / "figures" / "active_learning.csv")
        assert sorted(figure["arm"].unique()) == ["random", "uncertainty"] and len(figure) == 6

    assert_rerun_runs_nothing(out, yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8")),
                              monkeypatch)
