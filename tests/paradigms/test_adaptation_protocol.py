"""``cogimg evaluate --protocol leave-site-out``: every site held out once, in-site and
out-of-site scores with intervals, adapted variants, the recovered share of the drop."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import yaml

from cogimg.commands import evaluate
from cogimg.paradigms.adaptation.protocol import Experiment, recovery_table
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
    config["model"]["init_args"].update(input_shape=[16, 16, 16], model_kwargs={"block_inplanes": [4, 8, 8, 8]})
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
    assert (out / "lso_ad_binary_seed0.json").exists()


def test_recovery_table_is_the_share_of_the_drop():
    rows = [{"variant": "baseline", "scope": "in_site", "value": 0.9},
            {"variant": "baseline", "scope": "out_of_site", "value": 0.6},
            {"variant": "tent", "scope": "out_of_site", "value": 0.75}]
    table = {r["variant"]: r for r in recovery_table(rows)}
    assert table["tent"]["recovered"] == pytest.approx(0.5)
    assert table["in-site"]["score"] == pytest.approx(0.9)


def test_experiment_rejects_foreign_classes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": {"class_path": "os.system", "init_args": {}},
                                   "data": {"class_path": "cogimg.data.datamodules.VolumeDataModule"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="model.class_path must be one of"):
        Experiment.from_yaml(bad)
