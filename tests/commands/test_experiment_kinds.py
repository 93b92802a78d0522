"""Every YAML under experiments/ runs through ``cogimg fit``: a LightningCLI config (parsed by
tests/tasks/test_experiment_config.py) or one whose top-level ``kind`` the CLI routes
(:data:`cogimg.lightning_cli.KINDS`) to the plain command of that kind, with the same
arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cogimg.cli import main
from cogimg.lightning_cli import KINDS, config_kind, config_paths, routed_command
from cogimg.paradigms.outcome import load_config
from cogimg.tracking.benchmark import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))
#: kind -> the loader that checks a config of that kind
LOADERS = {"outcome": load_config, "benchmark": load_benchmark}


def _id(path: Path) -> str:
    return str(path.relative_to(ROOT / "experiments"))


def test_every_kind_has_a_loader():
    assert set(LOADERS) == set(KINDS)


@pytest.mark.parametrize("config", EXPERIMENTS, ids=_id)
def test_experiment_is_a_lightning_config_or_has_a_known_kind(config):
    text = yaml.safe_load(config.read_text(encoding="utf-8"))
    kind = config_kind(config)
    if kind is None:  # LightningCLI: test_experiment_config.py parses exactly these
        assert "class_path" in (text.get("model") or {}), f"{config}: neither LightningCLI nor kind"
        assert routed_command(["fit", "--config", str(config)]) is None
    else:
        assert kind in KINDS, f"{config}: unknown kind {kind!r}"
        LOADERS[kind](config)  # checks the file, kind included
        assert routed_command(["fit", "--config", str(config)]) == KINDS[kind]


def test_config_paths_reads_every_spelling():
    argv = ["--config", "a.yaml", "-c", "b.yaml", "--config=c.yaml", "--trainer.max_epochs", "1"]
    assert config_paths(argv) == ["a.yaml", "b.yaml", "c.yaml"]


def _tiny_outcome_config(tiny_soop: Path, tmp_path: Path) -> Path:
    """experiments/outcome/soop_svr.yaml on the tiny cohort: 2 folds, 200 bootstrap draws."""
    config = yaml.safe_load((ROOT / "experiments" / "outcome" / "soop_svr.yaml")
                            .read_text(encoding="utf-8"))
    config["data"].update(mask_dir=str(tiny_soop / "lesions"), scores=str(tiny_soop / "scores.tsv"),
                          atlas=str(tiny_soop / "atlas.nii.gz"))
    config["cv"].update(n_folds=2, split=str(tmp_path / "split.json"))
    config.update(bootstrap=200, out=str(tmp_path / "default_out"))
    path = tmp_path / "tiny_svr.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


def test_fit_runs_an_outcome_config_as_cogimg_outcome_does(tiny_soop, tmp_path, capsys):
    config = _tiny_outcome_config(tiny_soop, tmp_path)
    assert main(["fit", "--config", str(config), "--out", str(tmp_path / "fit")]) == 0
    assert main(["outcome", "--config", str(config), "--out", str(tmp_path / "outcome")]) == 0
    # the same result row, but for its wall time ("0.2 s")
    fit_row, outcome_row = (row.rsplit(maxsplit=2)[0]
                            for row in capsys.readouterr().out.strip().splitlines())
    assert fit_row == outcome_row and fit_row.startswith("tiny_svr")
    fit, outcome = _metrics(tmp_path / "fit"), _metrics(tmp_path / "outcome")
    assert fit["n_subjects"] == 20 and len(fit["pearson_r_folds"]) == 2
    assert fit["pooled"] == outcome["pooled"] and fit["val"] == outcome["val"]
    manifest = json.loads((tmp_path / "fit" / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["kind"], manifest["task"], manifest["model"]) == (
        "regression", "sklearn:soop_svr", "soop_svr")
    # the outcome command's own options, -c for --config, and its --overwrite
    assert main(["fit", "-c", str(config), "--out", str(tmp_path / "fit")]) == 2
    assert "already records a run" in capsys.readouterr().err
    assert main(["fit", "-c", str(config), "--out", str(tmp_path / "fit"), "--overwrite",
                 "--n-folds", "4", "--split", str(tmp_path / "split4.json")]) == 0
    assert len(_metrics(tmp_path / "fit")["pearson_r_folds"]) == 4
    assert not (tmp_path / "default_out").exists()


def test_fit_runs_a_benchmark_file_as_cogimg_benchmark_does(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("cogimg.tracking.benchmark.run_benchmark",
                        lambda path, out, full, workers: calls.append((str(path), out, full, workers)))
    quick = str(ROOT / "experiments" / "quickstart.yaml")
    assert main(["fit", "--config", quick, "--out", str(tmp_path), "--full"]) == 0
    assert main(["benchmark", quick, "--out", str(tmp_path), "--full"]) == 0
    assert calls == [(quick, str(tmp_path), True, 2)] * 2
    assert main(["benchmark", quick, "--config", quick]) == 2
    assert "two benchmark files" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(quick).read_text(encoding="utf-8").replace("kind: benchmark", "kind: bench"),
                   encoding="utf-8")
    with pytest.raises(ValueError, match="bad.yaml: kind: 'bench', not 'benchmark'"):
        load_benchmark(bad)


def test_unroutable_kinds_are_usage_errors(tmp_path, capsys):
    outcome = ROOT / "experiments" / "outcome" / "svr.yaml"
    other = tmp_path / "other.yaml"
    other.write_text("kind: lsm\nmodel: {}\n", encoding="utf-8")
    assert main(["fit", "--config", str(other)]) == 2
    err = capsys.readouterr().err
    assert err == (f"cogimg fit: error: {other}: unknown kind 'lsm'; known kinds: "
                   "['benchmark', 'outcome'] (a LightningCLI config has no kind)\n")
    for command in ("validate", "test"):
        assert main([command, "--config", str(outcome)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cogimg {command}: error: {outcome} is a kind: outcome experiment")
        assert err.count("\n") == 1
    lightning = ROOT / "experiments" / "stroke" / "seg_unet.yaml"
    assert main(["fit", "--config", str(lightning), "--config", str(outcome)]) == 2
    assert "runs alone" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # an outcome option it does not take: argparse, 2
        main(["fit", "--config", str(outcome), "--trainer.max_epochs", "1"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --trainer.max_epochs" in capsys.readouterr().err
