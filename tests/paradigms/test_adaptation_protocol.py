"""``cogimg evaluate --protocol leave-site-out``: every site held out once, in-site and
out-of-site scores with intervals, adapted variants, the recovered share of the drop."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import yaml

from cogimg.commands import evaluate
from cogimg.paradigms.adaptation.protocol import Experiment, LeaveSiteOut
from cogimg.paradigms.adaptation.recovery import paired_recovery_bootstrap, recovery_table
from tests.classification_tree import build_classification_tree

ROOT = Path(__file__).resolve().parents[2]


def _evaluate(argv: list[str]) -> int:
    """``cogimg evaluate ARGV`` (through the command module, as cogimg.cli runs it)."""
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return evaluate.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lso")
    tree = build_classification_tree(tmp / "bids", n_per_class=6, diagnoses=("CN", "AD"))
    config = yaml.safe_load((ROOT / "experiments" / "ad" / "lso_resnet10_t1.yaml").read_text(encoding="utf-8"))
    config["model"]["init_args"].update(model_kwargs={"block_inplanes": [4, 8, 8, 8]})
    config["data"]["init_args"].update(data_root=str(tree), target_shape=[16, 16, 16], batch_size=4,
                                       num_workers=0, cache_dir=str(tmp / "cache"), augmentation="none")
    config["trainer"]["max_epochs"] = 1
    path = tmp / "lso.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_evaluate_leave_site_out_writes_scores_per_site_and_variant(tiny_config, tmp_path):
    out = tmp_path / "out"
    assert _evaluate(["--protocol", "leave-site-out", "--config", str(tiny_config), "--out", str(out),
                      "--variants", "adabn,tent,coral", "--sites", "site-1"]) == 0
    rows = list(csv.DictReader((out / "lso_results.csv").open(encoding="utf-8")))
    assert [(r["variant"], r["scope"]) for r in rows] == [
        ("baseline", "in_site"), ("baseline", "out_of_site"), ("adabn", "out_of_site"),
        ("tent", "out_of_site"), ("coral", "out_of_site")]
    tree = Path(yaml.safe_load(tiny_config.read_text(encoding="utf-8"))["data"]["init_args"]["data_root"])
    site1 = sum(1 for line in (tree / "participants.tsv").read_text(encoding="utf-8").splitlines()[1:] if "\tsite-1\t" in line)
    for r in rows:
        assert r["site"] == "site-1" and r["metric"] == "balanced_accuracy"
        assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
        if r["scope"] == "out_of_site":
            assert int(r["n"]) == site1
    summary = list(csv.DictReader((out / "lso_summary.csv").open(encoding="utf-8")))
    assert [s["variant"] for s in summary] == ["in-site", "out-of-site", "adabn", "tent", "coral"]
    assert (out / "lso_ad_binary_seed0_val20.json").exists()


def test_split_is_made_per_val_fraction(tiny_config, tmp_path):
    """A split saved for one held-out share is not reused for another (it was, by name)."""
    from cogimg.data.splits import load_split

    experiment = Experiment.from_yaml(tiny_config)
    folds = {}
    for fraction in (0.2, 0.5):
        protocol = LeaveSiteOut(experiment, tmp_path, val_fraction=fraction, log=lambda _: None)
        folds[fraction] = load_split(protocol.split_path()).folds[0]
    assert len(folds[0.5]["val"]) > len(folds[0.2]["val"])
    assert folds[0.2]["test"] == folds[0.5]["test"]


def test_recovery_table_is_the_share_of_the_drop():
    rows = [{"variant": "baseline", "scope": "in_site", "value": 0.9},
            {"variant": "baseline", "scope": "out_of_site", "value": 0.6},
            {"variant": "tent", "scope": "out_of_site", "value": 0.75}]
    table = {r["variant"]: r for r in recovery_table(rows)}
    assert table["tent"]["recovered"] == pytest.approx(0.5)
    assert table["in-site"]["score"] == pytest.approx(0.9)



def _subject_table(site_values: dict[str, dict[str, list[float]]]) -> list[dict]:
    """Per-subject rows from {site: {kind: values}}; kind "in" is in-site (its own subjects),
    "out" the baseline out-of-site and any other name a variant on the same out-of-site subjects."""
    rows = []
    for site, kinds in site_values.items():
        for kind, values in kinds.items():
            variant = "baseline" if kind in ("in", "out") else kind
            scope = "in_site" if kind == "in" else "out_of_site"
            prefix = f"{site}-in" if kind == "in" else f"{site}-out"
            rows += [{"site": site, "variant": variant, "scope": scope, "subject_id": f"{prefix}{i}", "value": v}
                     for i, v in enumerate(values)]
    return rows


def test_paired_recovery_bootstrap_pools_seeds_and_pairs_subjects():
    """Hand-made Dice: site means, then the mean over sites, then over seeds; shares of the
    pooled means; a variant equal to out-of-site on every subject has a CI of exactly 0
    (paired), and one that adds a constant has a CI that contains its point share."""
    seed0 = _subject_table({
        "A": {"in": [0.8, 0.6], "out": [0.4, 0.6, 0.5], "same": [0.4, 0.6, 0.5], "plus": [0.5, 0.7, 0.6]},
        "B": {"in": [0.7, 0.7, 0.7], "out": [0.5, 0.5], "same": [0.5, 0.5], "plus": [0.6, 0.6]},
    })  # in 0.7, out 0.5, plus 0.6 -> share 0.5
    seed1 = _subject_table({
        "A": {"in": [0.9, 0.7], "out": [0.3, 0.5, 0.4], "same": [0.3, 0.5, 0.4], "plus": [0.4, 0.6, 0.5]},
        "B": {"in": [0.8, 0.8, 0.8], "out": [0.4, 0.4], "same": [0.4, 0.4], "plus": [0.5, 0.5]},
    })  # in 0.8, out 0.4, plus 0.5 -> share 0.25
    result = paired_recovery_bootstrap([seed0, seed1], n_boot=200, seed=0)
    assert result["per_seed"][0]["plus"] == pytest.approx(0.5)
    assert result["per_seed"][1]["plus"] == pytest.approx(0.25)
    table = {r["variant"]: r for r in result["table"]}
    assert [r["variant"] for r in result["table"]] == ["in-site", "out-of-site", "same", "plus"]
    assert table["in-site"]["score"] == pytest.approx(0.75)
    assert table["out-of-site"]["score"] == pytest.approx(0.45)
    assert table["plus"]["score"] == pytest.approx(0.55)
    assert table["plus"]["recovered"] == pytest.approx(1 / 3)  # of the pooled means, not mean of 0.5/0.25
    assert table["same"]["ci_low"] == table["same"]["ci_high"] == pytest.approx(0.0)
    assert table["plus"]["ci_low"] < 1 / 3 < table["plus"]["ci_high"]
    assert table["plus"]["gain_low"] == pytest.approx(0.1) == table["plus"]["gain_high"]  # paired
    assert table["in-site"]["gain"] == pytest.approx(0.3)  # the drop
    # The drop is resampled too: in-site and out-of-site vary, so the share's CI has width.
    assert table["plus"]["ci_high"] - table["plus"]["ci_low"] > 0.05


def test_paired_recovery_bootstrap_needs_the_same_subjects_in_every_seed():
    seed0 = _subject_table({"A": {"in": [0.8, 0.6], "out": [0.4, 0.6], "tent": [0.5, 0.6]}})
    seed1 = [r for r in _subject_table({"A": {"in": [0.8, 0.6], "out": [0.4, 0.6], "tent": [0.5, 0.6]}})
             if r["subject_id"] != "A-out1" or r["variant"] != "tent"]
    with pytest.raises(ValueError, match="same subjects"):
        paired_recovery_bootstrap([seed0, seed1], n_boot=10)


def test_experiment_rejects_foreign_classes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"class_path": "os.system", "init_args": {}},
                                   "data": {"class_path": "cogimg.data.datamodules.VolumeDataModule"}}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.yaml: Parser key \"model\""):
        Experiment.from_yaml(bad)


def test_same_site_in_site_scores_the_held_out_sites_own_subjects(tiny_config, tmp_path):
    """With every site run, site s's in-site reference is site-s subjects of the other folds'
    in-site sets (the population of its out-of-site score), not other sites' subjects."""
    from cogimg.data.splits import load_split

    protocol = LeaveSiteOut(Experiment.from_yaml(tiny_config), tmp_path, val_fraction=0.5, log=lambda _: None)
    rows = protocol.run(variants=[])
    split = load_split(protocol.split_path())
    same = {r["site"]: r for r in rows if r["scope"] == "in_site_same_site"}
    assert set(same) == {"site-1", "site-2"}
    # Two sites: site-1's same-site set is the in-site set of the fold that held out site-2.
    assert same["site-1"]["n"] == len(split.fold("site-2")["val"])
    in_site = {r["site"]: r for r in rows if r["scope"] == "in_site"}
    assert same["site-1"]["value"] == pytest.approx(in_site["site-2"]["value"])


def _tiny_stroke_config(tmp_path: Path) -> Path:
    """The stroke leave-site-out experiment on a tiny two-site tree, one epoch, small U-Net."""
    from tests.tasks.conftest import SMALL_UNET, build_easy_stroke_tree

    tree = build_easy_stroke_tree(tmp_path / "bids", n=8)
    config = yaml.safe_load((ROOT / "experiments" / "stroke" / "lso_unet.yaml").read_text(encoding="utf-8"))
    config["model"]["init_args"].update(model_kwargs={**SMALL_UNET, "norm": "batch"})
    config["data"]["init_args"].update(data_root=str(tree), spacing_mm=4.0, patch_size=[16, 16, 16],
                                       samples_per_volume=2, queue_length=4, batch_size=2, num_workers=0,
                                       cache_dir=str(tmp_path / "cache"), augmentation="none")
    config["trainer"]["max_epochs"] = 1
    path = tmp_path / "lso.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_segmentation_same_site_rows_score_dice_of_the_held_out_sites_own_subjects(tmp_path):
    """Segmentation gets the same-site rows too: Dice of site s's subjects in the other
    fold's in-site set (two sites: exactly that fold's in-site set); DANN runs as a variant."""
    from cogimg.data.splits import load_split

    path = _tiny_stroke_config(tmp_path)
    protocol = LeaveSiteOut(Experiment.from_yaml(path), tmp_path / "out", val_fraction=0.5, log=lambda _: None)
    rows = protocol.run(variants=["adabn", "dann"])  # dann: the held-out site's patches unlabelled
    split = load_split(protocol.split_path())
    assert all(r["metric"] == "dice" and r["ci_low"] <= r["value"] <= r["ci_high"] for r in rows)
    assert {r["site"] for r in rows if r["variant"] == "dann"} == {"site-1", "site-2"}
    same = {r["site"]: r for r in rows if r["scope"] == "in_site_same_site"}
    assert set(same) == {"site-1", "site-2"}
    in_site = {r["site"]: r for r in rows if r["scope"] == "in_site"}
    for site, other in (("site-1", "site-2"), ("site-2", "site-1")):
        assert same[site]["n"] == len(split.fold(other)["val"]) == in_site[other]["n"]
        assert same[site]["value"] == pytest.approx(in_site[other]["value"])
    # Per-subject Dice behind every in-site / out-of-site / adapted row (what --seed runs pool).
    for row in (r for r in rows if r["scope"] != "in_site_same_site"):
        mine = [s["value"] for s in protocol.subject_rows
                if (s["site"], s["variant"], s["scope"]) == (row["site"], row["variant"], row["scope"])]
        assert len(mine) == row["n"] and sum(mine) / len(mine) == pytest.approx(row["value"])


def test_dann_mt_trains_dann_and_a_mean_teacher_on_the_held_out_site(tmp_path):
    """``dann_mt``: one training with both add-ons (DANN, and a mean teacher on the held-out
    site's unlabelled ``target`` stream) on the TargetSite datamodule; it scores an
    out-of-site row like the other trained variants."""
    from cogimg.paradigms.adaptation.datamodule import TargetSitePatchDataModule
    from cogimg.paradigms.adaptation.domain import DomainAdaptation
    from cogimg.paradigms.lowlabel import SemiSupervised

    path = _tiny_stroke_config(tmp_path)
    protocol = LeaveSiteOut(Experiment.from_yaml(path), tmp_path / "out", val_fraction=0.5, log=lambda _: None,
                            mean_teacher={"rampup_steps": 0})
    task = protocol._task("dann_mt", 0.3)
    dann, teacher = task.addons
    assert isinstance(dann, DomainAdaptation) and dann.config()["method"] == "dann"
    assert dann.config()["weight"] == pytest.approx(0.3)
    assert isinstance(teacher, SemiSupervised) and teacher.options.method == "mean_teacher"
    assert teacher.options.stream == "target" and teacher.options.rampup_steps == 0  # options passed through
    assert isinstance(protocol._datamodule("site-1", "dann_mt"), TargetSitePatchDataModule)

    logged, train = {}, protocol._train

    def train_and_keep_logs(site, variant, weight):  # the fit's logged values (evaluation replaces them)
        task, dm = train(site, variant, weight)
        logged[variant] = set(task.trainer.callback_metrics)
        return task, dm

    protocol._train = train_and_keep_logs
    rows = protocol.run(variants=["dann_mt"], sites=["site-1"])
    assert {"train/dann_loss", "train/mean_teacher_loss"} <= logged["dann_mt"]
    assert not {"train/dann_loss", "train/mean_teacher_loss"} & logged["baseline"]
    assert [(r["variant"], r["scope"]) for r in rows] == [
        ("baseline", "in_site"), ("baseline", "out_of_site"), ("dann_mt", "out_of_site")]
    out = rows[-1]
    assert out["site"] == "site-1" and out["metric"] == "dice" and out["ci_low"] <= out["value"] <= out["ci_high"]
    assert out["n"] == rows[1]["n"]  # the same held-out subjects as the baseline's out-of-site row
    mine = [s for s in protocol.subject_rows if s["variant"] == "dann_mt"]
    assert len(mine) == out["n"] and {s["scope"] for s in mine} == {"out_of_site"}
