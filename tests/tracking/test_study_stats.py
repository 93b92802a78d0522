"""A study's comparison statistic (b − a pooled over seeds, paired bootstrap over subjects with
a subject held out by two seeds one cluster) against hand computations and the bootstrap
functions directly; study files are typed (one error naming file and key); ``cogimg
leaderboard`` on a study folder adds its comparison table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cogimg.cli import main
from cogimg.metrics.bootstrap import paired_bootstrap, paired_mean_ci
from cogimg.metrics.classification import balanced_accuracy
from cogimg.tracking.run import write_run
from cogimg.tracking.study_spec import load_study
from cogimg.tracking.study_stats import comparison_table, paired_difference

ROOT = Path(__file__).resolve().parents[2]


def pooled(values: dict[tuple[int, str], float], column: str = "dice") -> pd.DataFrame:
    """A pooled table (seed:subject entries, subject as cluster) of one per-subject column."""
    return pd.DataFrame([{"subject_id": f"{seed}:{subject}", "cluster": subject, column: v}
                         for (seed, subject), v in values.items()])


def test_mean_metric_difference_is_paired_mean_ci_clustered_by_subject():
    rng = np.random.default_rng(3)
    # two seeds hold out overlapping subjects: s1, s2 in both (one cluster each)
    keys = [(0, "s1"), (0, "s2"), (0, "s3"), (1, "s1"), (1, "s2"), (1, "s4"), (1, "s5")]
    a = {k: float(rng.uniform(0.3, 0.7)) for k in keys}
    b = {k: float(rng.uniform(0.4, 0.9)) for k in keys}
    b[(0, "s9")] = 0.99  # an entry arm a lacks: left out (entries both arms share)
    result = paired_difference(pooled(a), pooled(b), "segmentation", "dice", n_boot=300, seed=0)

    order = sorted(f"{s}:{x}" for s, x in keys)  # entries in id order, as the scorer aligns them
    va = np.array([a[(int(e[0]), e[2:])] for e in order])
    vb = np.array([b[(int(e[0]), e[2:])] for e in order])
    clusters = np.array([e[2:] for e in order])
    assert result["mean_a"] == pytest.approx(va.mean())
    assert result["mean_b"] == pytest.approx(vb.mean())
    assert result["difference"] == pytest.approx(vb.mean() - va.mean())
    low, high = paired_mean_ci(vb, va, n_boot=300, seed=0, groups=clusters)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high))
    assert result["n_subjects"] == 5 and result["n_entries"] == 7
    # clustering matters: resampling entries instead of subjects gives another interval
    assert (low, high) != pytest.approx(paired_mean_ci(vb, va, n_boot=300, seed=0))


def test_classification_difference_is_pooled_balanced_accuracy_with_stratified_pairs():
    rng = np.random.default_rng(0)
    classes = ["CN", "AD"]
    rows_a, rows_b = [], []
    for seed in (0, 1):
        for i in range(10):
            subject, label = f"sub{i + 3 * seed}", classes[i % 2]  # seeds share sub3..sub9
            for rows in (rows_a, rows_b):
                p = float(rng.uniform())
                rows.append({"subject_id": f"{seed}:{subject}", "cluster": subject, "label": label,
                             "prob_CN": 1 - p, "prob_AD": p})
    a, b = pd.DataFrame(rows_a), pd.DataFrame(rows_b)
    result = paired_difference(a, b, "classification", "balanced_accuracy", n_boot=200, seed=1)

    a, b = a.sort_values("subject_id"), b.sort_values("subject_id")
    y = (a["label"] == "AD").to_numpy().astype(int)
    pa = (a["prob_AD"] > a["prob_CN"]).to_numpy().astype(int)
    pb = (b["prob_AD"] > b["prob_CN"]).to_numpy().astype(int)
    assert result["difference"] == pytest.approx(balanced_accuracy(y, pb) - balanced_accuracy(y, pa))
    direct = paired_bootstrap(lambda i: balanced_accuracy(y[i], pb[i]),
                              lambda i: balanced_accuracy(y[i], pa[i]), y.size, 200, 1,
                              strata=y, groups=a["cluster"].to_numpy())
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((direct["ci_low"], direct["ci_high"]))
    assert result["n_subjects"] == 13 and result["n_entries"] == 20


def _runs(out: Path, arm: str, values_by_seed: dict[int, dict[str, float]]) -> None:
    for seed, values in values_by_seed.items():
        write_run(out / "runs" / arm / f"seed{seed}", None, experiment=arm, variant="default",
                  seed=seed, task="cogimg.tasks.segmentation.SegmentationTask", kind="segmentation",
                  model="unet", subjects={"val": [{"subject_id": s, "dice": v} for s, v in values.items()]},
                  metrics={"val": {"val/dice": float(np.mean(list(values.values())))}})


def test_comparison_table_and_leaderboard_command_read_a_study_folder(tmp_path, capsys):
    subjects = [f"s{i}" for i in range(6)]
    values = {"low": 0.2, "mid": 0.5, "high": 0.8}
    for arm, base in values.items():
        _runs(tmp_path, arm, {seed: {s: base + 0.01 * i + 0.02 * seed for i, s in enumerate(subjects)}
                              for seed in (0, 1)})
    study = {"name": "toy", "question": "q", "seeds": [0, 1], "n_boot": 100,
             "comparisons": [{"a": ["low", "mid"], "b": "high", "metric": "dice", "stage": "val",
                              "name": None}]}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    table = comparison_table(tmp_path, study)
    row = table.iloc[0]
    assert (row["arm_a"], row["arm_b"]) == ("mid", "high")  # the best of a's list
    assert row["difference"] == pytest.approx(0.3) and row["ci_low"] == pytest.approx(0.3)
    assert row["n_subjects"] == 6 and row["n_entries"] == 12 and row["seeds"] == "0,1"

    assert main(["leaderboard", str(tmp_path), "--n-boot", "50"]) == 0
    printed = capsys.readouterr().out
    assert "| mid | high | dice | val | 0.535 | 0.835 | +0.300 |" in printed
    saved = pd.read_csv(tmp_path / "comparisons.csv")
    assert list(saved.columns[:10]) == ["comparison", "arm_a", "arm_b", "metric", "stage", "mean_a",
                                        "mean_b", "difference", "ci_low", "ci_high"]
    assert (tmp_path / "comparisons.md").read_text(encoding="utf-8").count("| mid | high |") == 1


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = f"""kind: study
name: t
question: q
cohort: {{subjects: 4}}
overrides: ["--trainer.max_epochs", "9"]
arms:
  - {{name: x, config: {ROOT}/experiments/ad/cls_resnet10_t1.yaml, overrides: ["--a", "1"]}}
  - {{name: y, config: {ROOT}/experiments/ad/cls_resnet10_pet.yaml, budget_s: 60}}
comparisons: [{{a: x, b: y, metric: auroc}}]
tiny: {{seeds: [3], overrides: ["--trainer.max_steps", "2"]}}
"""


def test_study_file_presets_and_errors(tmp_path):
    plain = load_study(_write(tmp_path, BASE))
    assert plain["seeds"] == [0] and plain["arms"][0]["overrides"] == ["--a", "1", "--trainer.max_epochs", "9"]
    assert plain["arms"][1]["budget_s"] == 60 and plain["comparisons"][0]["stage"] == "val"
    tiny = load_study(_write(tmp_path, BASE), preset="tiny")
    assert tiny["seeds"] == [3] and tiny["preset"] == "tiny"
    assert tiny["arms"][0]["overrides"] == ["--a", "1", "--trainer.max_steps", "2"]
    assert tiny["arms"][1]["budget_s"] is None
    for old, new, message in [
        ("name: x,", "nme: x,", r"arms\[0\]\.nme: unknown key"),
        ("b: y,", "b: z,", r"comparisons\[0\]\.b: no arm named \['z'\]"),
        ("budget_s: 60", "runner: magic", r"arms\[1\] \(y\)\.runner: 'magic'"),
        ("question: q\n", "question: q\nfigures: [pie]\n", r"figures: \['pie'\] unknown"),
        ("cohort: {subjects: 4}\n", "", "cohort / data: give exactly one"),
        ("cls_resnet10_pet", "nope", r"arms\[1\] \(y\)\.config: .* not found"),
    ]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_study(_write(tmp_path, BASE.replace(old, new)))
    with pytest.raises(ValueError, match="full: no such preset"):
        load_study(_write(tmp_path, BASE), preset="full")


@pytest.mark.parametrize("name", ["fusion_gain", "pd_backbones", "detection_froc"])
def test_shipped_studies_resolve_with_both_presets(name):
    for preset in (None, "tiny", "full"):
        study = load_study(ROOT / "studies" / f"{name}.yaml", preset)
        assert study["comparisons"] and all(Path(a["config"]).is_file() for a in study["arms"])
