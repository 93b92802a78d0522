"""Leave-site-out report rows (figure kind ``site_recovery``): in-site, same-site, out-of-site,
each variant and the recovered shares per held-out site against a hand computation on a
hand-made Dice table; the same table read back from run directories; and the stroke studies
(``leave_site_out_stroke.yaml``, ``federated_stroke.yaml``) end to end in their tiny preset,
resuming without retraining."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from cogimg.cli import main
from cogimg.tracking import study_figures_sites as sites
from cogimg.tracking.leaderboard import find_runs
from cogimg.tracking.study_spec import load_study
from tests.tracking.study_checks import assert_rerun_runs_nothing

ROOT = Path(__file__).resolve().parents[2]
STROKE = ("leave_site_out_stroke", "federated_stroke")


def dice(*rows: tuple) -> pd.DataFrame:
    """Per-subject rows ``(subject_id, site, dice)``."""
    return pd.DataFrame(rows, columns=["subject_id", "site", "dice"])


def hand_folds(shift: float = 0.0) -> tuple[dict, dict, dict]:
    """Three held-out sites of one seed: the baseline's in-site and out-of-site rows and one
    variant's (its Dice + ``shift``). Subject a1 of site s1 is in two folds' in-site sets."""
    in_site = {"s1": dice(("a2", "s2", 0.8), ("a3", "s3", 0.6)),
               "s2": dice(("a1", "s1", 0.9), ("a3", "s3", 0.5)),
               "s3": dice(("a1", "s1", 0.7), ("d1", "s1", 0.2), ("a2", "s2", 0.6))}
    out = {"s1": dice(("b1", "s1", 0.5), ("c1", "s1", 0.3)),
           "s2": dice(("b2", "s2", 0.6), ("c2", "s2", 0.4)),
           "s3": dice(("b3", "s3", 0.2))}
    variant = {"s1": dice(("b1", "s1", 0.6 + shift), ("c1", "s1", 0.4 + shift)),
               "s2": dice(("b2", "s2", 0.5 + shift), ("c2", "s2", 0.5 + shift)),
               "s3": dice(("b3", "s3", 0.35 + shift))}
    return in_site, out, variant


def keyed(seed: str, folds: dict) -> dict:
    return {(seed, site): rows for site, rows in folds.items()}


def test_drop_share_is_undefined_without_a_positive_drop():
    assert sites.drop_share(0.5, 0.4, 0.7) == pytest.approx(1 / 3)
    assert sites.drop_share(0.3, 0.4, 0.6) == pytest.approx(-0.5)  # the variant made it worse
    assert math.isnan(sites.drop_share(0.5, 0.6, 0.6))  # no drop
    assert math.isnan(sites.drop_share(0.5, 0.6, 0.55))  # out-of-site above in-site
    assert math.isnan(sites.drop_share(float("nan"), 0.4, 0.7))


def test_site_rows_and_shares_match_a_hand_computation():
    in_site, out, variant = hand_folds()
    table = sites.site_table(keyed("0", in_site), keyed("0", out), {"v": keyed("0", variant)},
                             "segmentation", "dice").set_index("site")
    # in-site: the fold's own in-site rows; same-site: site s's entries of the *other* folds
    # (s1: a1 0.9 from fold s2, a1 0.7 and d1 0.2 from fold s3 -> three entries)
    want = {"s1": (0.7, (0.9 + 0.7 + 0.2) / 3, 0.4, 0.5),
            "s2": (0.7, (0.8 + 0.6) / 2, 0.5, 0.5),
            "s3": (1.5 / 3, (0.6 + 0.5) / 2, 0.2, 0.35)}
    for site, (in_, same, out_, v) in want.items():
        row = table.loc[site]
        assert [row["in_site"], row["same_site"], row["out_of_site"], row["v"]] == pytest.approx(
            [in_, same, out_, v])
        assert row["share_v"] == pytest.approx((v - out_) / (in_ - out_))
        assert row["share_same_v"] == pytest.approx((v - out_) / (same - out_))
    assert table.loc["s1", ["n_in", "n_same", "n_out"]].tolist() == [2, 3, 2]
    assert table.loc["s3", "share_same_v"] == pytest.approx(3 / 7)  # 0.15 / 0.35
    mean = table.loc["mean"]  # shares of the means over sites, not means of the shares
    assert mean["in_site"] == pytest.approx(1.9 / 3) and mean["out_of_site"] == pytest.approx(1.1 / 3)
    assert mean["share_v"] == pytest.approx((1.35 - 1.1) / (1.9 - 1.1))  # 0.3125
    assert mean["share_same_v"] == pytest.approx((1.35 - 1.1) / (1.85 - 1.1))  # 1/3


def test_seed_mean_rows_average_the_seeds_then_take_the_share():
    in_site, out, variant = hand_folds()
    variant_1 = hand_folds(shift=0.1)[2]
    table = sites.site_table({**keyed("0", in_site), **keyed("1", in_site)},
                             {**keyed("0", out), **keyed("1", out)},
                             {"v": {**keyed("0", variant), **keyed("1", variant_1)}},
                             "segmentation", "dice")
    assert list(table["seed"]) == ["0"] * 3 + ["1"] * 3 + ["0", "1"] + ["mean"] * 4
    pooled = table[(table["seed"] == "mean") & (table["site"] == "mean")].iloc[0]
    assert pooled["v"] == pytest.approx((1.35 / 3 + 1.65 / 3) / 2)  # 0.5
    assert pooled["share_v"] == pytest.approx((0.5 - 1.1 / 3) / (1.9 / 3 - 1.1 / 3))  # 0.5


def test_table_from_run_directories_and_figure(tmp_path):
    """The runner's layout (``runs/<arm>/seed<k>/<site>/``) gives the table the arrays give."""
    from cogimg.tasks.segmentation import SegmentationTask
    from cogimg.tracking.run import write_run

    task = SegmentationTask(patch_size=(16, 16, 16), model_kwargs={"channels": [4, 8],
                                                                   "strides": [2]})
    in_site, out, variant = hand_folds()
    for arm, stages in (("baseline", {"val": in_site, "test": out}), ("tent", {"test": variant})):
        for site in out:
            subjects = {stage: folds[site].to_dict("records") for stage, folds in stages.items()}
            write_run(tmp_path / "runs" / arm / "seed0" / site, task, experiment=f"held_out_{site}",
                      variant=arm, seed=0, subjects=subjects, metrics={"test": {}},
                      leave_site_out={"held_out": site})
    study = {"arms": [{"name": "baseline", "runner": "leave_site_out", "options": {}},
                      {"name": "tent", "runner": "leave_site_out", "options": {"variant": "tent"}},
                      {"name": "other", "runner": "fit"}],
             "comparisons": [{"a": "baseline", "b": "tent", "metric": "dice", "stage": "test"}]}
    table = sites.recovery_by_site(tmp_path, study)
    want = sites.site_table(keyed("0", in_site), keyed("0", out), {"tent": keyed("0", variant)},
                            "segmentation", "dice")
    pd.testing.assert_frame_equal(table, want)
    written = sites.site_recovery_figure(tmp_path, study, tmp_path / "figures")
    assert [p.name for p in written] == ["site_recovery.png"]
    assert "| tent (same-site→out) | +50% | +0% | +43% | +33% |" in (
        tmp_path / "figures" / "site_recovery.md").read_text(encoding="utf-8")
    assert sites.site_recovery_figure(tmp_path, {"arms": []}, tmp_path / "none") == []


@pytest.fixture(scope="module")
def stroke_cohort(tmp_path_factory) -> Path:
    """The stroke tiny presets' one cohort, synthesised once."""
    from cogimg.data.synth import generate_cohort

    cohorts = [load_study(ROOT / "studies" / f"{name}.yaml", "tiny")["cohort"] for name in STROKE]
    assert cohorts[0] == cohorts[1], "the stroke tiny presets must share one cohort"
    cohort = dict(cohorts[0])
    root = tmp_path_factory.mktemp("stroke_cohort") / "data"
    generate_cohort(root, cohort.pop("subjects"), cohort.pop("seed"), workers=1, progress=False,
                    **cohort)
    return root


def run_tiny(name: str, cohort: Path, tmp_path: Path, monkeypatch) -> tuple[Path, dict]:
    monkeypatch.setenv("COGIMG_WANDB", "off")
    monkeypatch.chdir(ROOT)  # the arms name their experiment YAMLs from the repository root
    out = tmp_path / name
    out.mkdir()
    (out / "data").symlink_to(cohort, target_is_directory=True)
    assert main(["study", str(ROOT / "studies" / f"{name}.yaml"), "--out", str(out), "--preset",
                 "tiny", "--accelerator", "cpu", "--workers", "1"]) == 0
    return out, load_study(ROOT / "studies" / f"{name}.yaml", "tiny")


@pytest.mark.study
@pytest.mark.slow  # a 12-subject stroke cohort, two held-out sites, three arms
def test_lso_stroke_tiny_end_to_end(stroke_cohort, tmp_path, monkeypatch):
    out, study = run_tiny("leave_site_out_stroke", stroke_cohort, tmp_path, monkeypatch)
    arms = [a["name"] for a in study["arms"]]
    assert arms == ["baseline", "dann_mt", "tent"]
    in_site, _ = find_runs(out / "runs" / "baseline", stage="val")
    assert len(in_site) == 2 and all(set(r.subjects["site"]) <= {"site-1", "site-2"} for r in in_site)
    for run in in_site:  # in-site subjects are the *other* site's
        assert set(run.subjects["site"]) == {"site-1", "site-2"} - {run.manifest["leave_site_out"]["held_out"]}
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert list(comparisons["arm_b"]) == ["dann_mt", "tent"] and set(comparisons["metric"]) == {"dice"}
    assert (comparisons["n_subjects"] == 12).all()  # every stroke subject held out once
    table = pd.read_csv(out / "figures" / "site_recovery.csv", dtype={"seed": str})
    assert list(table["site"]) == ["site-1", "site-2", "mean"]
    assert list(table.columns[:8]) == ["seed", "site", "metric", "in_site", "same_site",
                                       "out_of_site", "dann_mt", "tent"]
    assert {"share_tent", "share_same_tent", "share_dann_mt", "share_same_dann_mt"} <= set(table)
    assert table["out_of_site"].between(0, 1).all() and table["same_site"].notna().all()
    assert list(table["n_out"][:2]) == [6, 6]
    assert (out / "figures" / "site_recovery.png").is_file()
    assert_rerun_runs_nothing(out, study, monkeypatch)


@pytest.mark.study
@pytest.mark.slow  # a 12-subject stroke cohort, two fits and one 1-round Flower (Ray) simulation
def test_federated_stroke_tiny_end_to_end(stroke_cohort, tmp_path, monkeypatch):
    out, study = run_tiny("federated_stroke", stroke_cohort, tmp_path, monkeypatch)
    test_ids = None
    for arm in study["arms"]:
        runs, skipped = find_runs(out / "runs" / arm["name"] / "seed0", stage="test")
        assert len(runs) == 1 and not skipped and runs[0].kind == "segmentation"
        assert set(runs[0].subjects["site"]) == {"site-1", "site-2"}
        ids = set(runs[0].subjects["subject_id"])
        assert test_ids is None or ids == test_ids  # every arm scores the same subjects
        test_ids = ids
    assert runs[0].metrics["test"]["test/dice"] == pytest.approx(runs[0].subjects["dice"].mean())
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert list(comparisons["comparison"]) == ["FedBN vs centralised", "FedBN vs best local"]
    assert set(comparisons["metric"]) == {"dice"}
    assert (comparisons["n_subjects"] == len(test_ids)).all()
    assert_rerun_runs_nothing(out, study, monkeypatch)
