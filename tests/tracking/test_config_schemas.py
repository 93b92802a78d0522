"""Sweep and benchmark files are typed (cogimg.schema): a bad key or a wrong type is
one ValueError naming the file and the full key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cogimg.tracking.benchmark import load_benchmark
from cogimg.tracking.sweep_spec import load_sweep

ROOT = Path(__file__).resolve().parents[2]
SWEEP = (ROOT / "sweeps" / "stroke_seg.yaml").read_text(encoding="utf-8")
BENCH = (ROOT / "experiments" / "quickstart.yaml").read_text(encoding="utf-8")


def _write(tmp_path: Path, folder: str, name: str, text: str) -> Path:
    # sweeps/ and experiments/ beside each other: relative config paths resolve to the checkout
    (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "experiments").mkdir(exist_ok=True)
    path = tmp_path / folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_files_load_with_their_typed_values():
    spec = load_sweep(ROOT / "sweeps" / "stroke_seg.yaml")
    assert spec.n_trials == 24 and spec.budget_s == 300.0 and spec.pruner["n_startup_trials"] == 4
    patch = next(p for p in spec.space if p.name == "patch")
    assert patch.targets == ("data.init_args.patch_size",)  # the model's copy is linked
    lr = next(p for p in spec.space if p.name == "lr")
    assert (lr.low, lr.high, lr.log) == (3.0e-4, 1.0e-2, True)
    bench = load_benchmark(ROOT / "experiments" / "quickstart.yaml")
    assert bench["seeds"] == [0, 1] and bench["cohort"]["subjects"] == 120


@pytest.mark.parametrize(("old", "new", "message"), [
    ("  lr: {type: float, low:", "  lr: {type: float, lowe: 1, low:", r"bad\.yaml: space\.lr\.lowe: unknown key"),
    ("budget_s: 300", "budget: 300", r"bad\.yaml: budget: unknown key"),
    ("n_trials: 24", "n_trials: many", r"bad\.yaml: n_trials: Expected a <class 'int'>\. Got value: many"),
    ("log: true, targets: [model.init_args.lr]", "log: often, targets: [model.init_args.lr]",
     r"bad\.yaml: space\.lr\.log: Expected a <class 'bool'>"),
    ("direction: maximize", "direction: upwards", r"bad\.yaml: objectives\[0\]\.direction: .*upwards"),
])
def test_sweep_file_errors_name_the_file_and_key(tmp_path, old, new, message):
    assert old in SWEEP
    with pytest.raises(ValueError, match=message):
        load_sweep(_write(tmp_path, "sweeps", "bad.yaml", SWEEP.replace(old, new, 1)))


@pytest.mark.parametrize(("old", "new", "message"), [
    ("seeds: [0, 1]", "seeds: [0, one]", r"bad\.yaml: seeds: .*one"),
    ("  seeds: [0, 1, 2]", "  seed: [0, 1, 2]", r"bad\.yaml: full\.seed: unknown key"),
    ("overrides: [\"--trainer.max_epochs\", \"30\"]}", "overrides: [\"--trainer.max_epochs\", \"30\"], budget: 9}",
     r"bad\.yaml: experiment 'experiments/ad/cls_resnet10_t1\.yaml'\.budget: unknown key"),
    ("overrides: [\"--trainer.max_epochs\", \"30\"]}", "overrides: [\"--trainer.max_epochs\", \"30\"], budget_s: soon}",
     r"bad\.yaml: experiment 'experiments/ad/cls_resnet10_t1\.yaml'\.budget_s: .*soon"),
])
def test_benchmark_file_errors_name_the_file_and_key(tmp_path, old, new, message):
    assert old in BENCH
    path = _write(tmp_path, "experiments", "bad.yaml", BENCH.replace(old, new, 1))
    for config in re.findall(r"experiments/[\w/]+\.yaml", BENCH):  # the files it names
        (tmp_path / config).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / config).write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_benchmark(path)
