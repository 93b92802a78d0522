"""Every experiments/connectome YAML runs on a tiny generated cohort: time series with known
covariances stand in for the func loader's output.

One deep YAML per model and preset goes through the whole ``cogimg fit`` CLI; the other deep
ones are built from their ``model``/``data`` sections (class_path + init_args, as LightningCLI
does) and run by a ``fast_dev_run`` Trainer, which checks the same init_args without paying
the CLI's parser per file. The tangent baselines (``kind: outcome``) run through the outcome
path (``ad`` through ``cogimg fit``) and land on the leaderboard beside a deep run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pandas as pd
import pytest
import yaml

from cogimg.cli import main
from cogimg.data.connectome import ConnectomeDataModule
from cogimg.lightning_cli import config_kind
from cogimg.paradigms.outcome import load_config
from cogimg.tracking.leaderboard import find_runs, leaderboard
from cogimg.tracking.outcome import run_outcome_experiment

#: structure–function fusion (volumes + connectomes) runs in tests/test_connectome_fusion.py
#: (AD) and tests/test_connectome_fusion_presets.py (PD, stroke)
FUSION = {"ad_fusion_t1_connectome", "pd_fusion_t1_dat_connectome",
          "stroke_fusion_lesion_connectome",
          # coupling features need T1w images: tests/test_connectome_coupling.py
          "ad_coupling_logistic", "pd_coupling_logistic"}
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "experiments" / "connectome")
                 .glob("*.yaml") if p.stem not in FUSION)
#: run through the CLI: every model and every preset once
THROUGH_CLI = {"ad_brainnetcnn", "pd_gnn", "stroke_mlp"}
R, T = 10, 50
DATA = {"n_folds": 2, "batch_size": 4, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """participants.tsv (6 per diagnosis, NIHSS for stroke) and each subject's (T, R) series."""
    root = tmp_path_factory.mktemp("connectome_tree")
    rng = np.random.default_rng(0)
    rows, series = [], {}
    for dx in ("CN", "MCI", "AD", "PD", "stroke"):
        for i in range(6):
            pid = f"sub-{dx}{i}"
            cov = np.eye(R)
            cov[0, 1] = cov[1, 0] = {"AD": 0.6, "PD": -0.5, "stroke": 0.1 * i}.get(dx, 0.0)
            series[pid] = rng.multivariate_normal(np.zeros(R), cov, size=T)
            rows.append({"participant_id": pid, "diagnosis": dx, "age": 70, "sex": "F",
                         "NIHSS": i * 2 if dx == "stroke" else "n/a"})
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root, SimpleNamespace(subjects=sorted(series), series=series, motion=None,
                                 region_names=[f"r{i}" for i in range(R)])


def _build(section: dict, **overrides):
    module, name = section["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    return cls(**{**section.get("init_args", {}), **overrides})


def test_every_config_is_covered():
    stems = {p.stem for p in CONFIGS}
    assert THROUGH_CLI <= stems and len(stems) >= 9


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_connectome_experiment_runs(config, tiny, tmp_path, monkeypatch):
    root, dataset = tiny
    monkeypatch.setattr(ConnectomeDataModule, "_load_func", lambda self: dataset)
    cache = tmp_path / "cache"
    if config_kind(config) == "outcome":
        _run_baseline(config, root, dataset, cache, tmp_path)
    elif config.stem in THROUGH_CLI:
        overrides = [x for k, v in DATA.items() for x in (f"--data.init_args.{k}", str(v))]
        assert main(["fit", "--config", str(config), "--trainer.fast_dev_run", "1",
                     "--trainer.default_root_dir", str(tmp_path),
                     "--trainer.enable_progress_bar", "false",
                     "--data.init_args.data_root", str(root),
                     "--data.init_args.cache_dir", str(cache), *overrides]) == 0
    else:
        spec = yaml.safe_load(config.read_text(encoding="utf-8"))
        dm = _build(spec["data"], data_root=root, cache_dir=cache, **DATA)
        # what the CLI links from the datamodule: classes from the preset, the one input channel
        linked = ({"classes": tuple(dm.preset.classes), "modalities": list(dm.modalities)}
                  if dm.task == "classification" else {})
        task = _build(spec["model"], **linked)
        trainer = L.Trainer(fast_dev_run=1, enable_progress_bar=False, logger=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(task, dm)
        assert trainer.state.finished and dm.num_nodes == R
        assert task.model.num_nodes == R
    (split,) = cache.joinpath("splits").glob("connectome_*.json")
    assert split.exists()


def _run_baseline(config: Path, root: Path, dataset, cache: Path, out: Path) -> Path:
    """The baseline YAML with the tiny cohort; ``ad`` through ``cogimg fit`` (kind: outcome)."""
    spec = yaml.safe_load(config.read_text(encoding="utf-8"))
    spec["data"].update(root=str(root), cache_dir=str(cache), test_fraction=0.25)
    spec["cv"].update(n_folds=2)
    spec["bootstrap"] = 50
    run_dir = out / "runs" / config.stem
    if config.stem.startswith("ad_"):
        copy = out / config.name
        copy.write_text(yaml.safe_dump(spec), encoding="utf-8")
        assert main(["fit", "--config", str(copy), "--out", str(run_dir)]) == 0
    else:
        parsed = load_config(config)
        parsed["data"].update(spec["data"])
        parsed.update(cv={**parsed["cv"], **spec["cv"]}, bootstrap=50, out=str(run_dir))
        run_outcome_experiment(parsed, dataset)
    val = pd.read_csv(run_dir / "subjects_val.csv")
    test = pd.read_csv(run_dir / "subjects_test.csv")
    assert not set(val["subject_id"]) & set(test["subject_id"])
    return run_dir


def test_baseline_lands_on_the_leaderboard_beside_a_deep_run(tiny, tmp_path, monkeypatch):
    root, dataset = tiny
    monkeypatch.setattr(ConnectomeDataModule, "_load_func", lambda self: dataset)
    cache = tmp_path / "cache"
    deep = CONFIGS[[p.stem for p in CONFIGS].index("ad_mlp")]
    assert main(["fit", "--config", str(deep), "--trainer.max_epochs", "1",
                 "--trainer.default_root_dir", str(tmp_path / "runs" / "ad_mlp"),
                 "--trainer.enable_progress_bar", "false",
                 "--data.init_args.data_root", str(root), "--data.init_args.cache_dir", str(cache),
                 *[x for k, v in DATA.items() for x in (f"--data.init_args.{k}", str(v))]]) == 0
    baseline = CONFIGS[[p.stem for p in CONFIGS].index("ad_tangent_logistic")]
    run_dir = _run_baseline(baseline, root, dataset, cache, tmp_path)
    runs, skipped = find_runs(tmp_path / "runs")
    board = leaderboard(runs, n_boot=20)
    assert set(board["model"]) == {"connectome_mlp", "tangent_logistic"}, (board, skipped)
    assert set(board["kind"]) == {"classification"}
    # same split: the deep run and the baseline validated the same subjects
    (deep_run,) = [r for r in runs if r.manifest["model"] == "connectome_mlp"]
    base_val = pd.read_csv(run_dir / "subjects_val.csv")
    assert sorted(deep_run.subjects["subject_id"]) == sorted(base_val["subject_id"])
    # the baseline's probabilities are a distribution over the preset's classes
    probs = base_val[["prob_CN", "prob_MCI", "prob_AD"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
