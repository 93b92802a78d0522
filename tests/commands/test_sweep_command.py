"""``cogimg sweep`` argument handling: the command's own options may follow the sweep file
(as the README writes them) without becoming trial overrides."""

from __future__ import annotations

import pytest

from cogimg.cli import build_parser
from cogimg.commands.sweep import split_overrides


def parse(*argv: str):
    return split_overrides(build_parser().parse_args(["sweep", *argv]))


def test_own_options_after_the_sweep_file_are_not_trial_overrides():
    args = parse("s.yaml", "--out", "o", "--workers", "4", "--executor", "slurm",
                 "--storage", "postgresql://u@h/db", "--", "--data.init_args.batch_size", "2", "--out", "x")
    assert (args.sweep, args.out, args.workers, args.executor) == ("s.yaml", "o", 4, "slurm")
    assert args.storage == "postgresql://u@h/db"
    assert args.overrides == ["--data.init_args.batch_size", "2", "--out", "x"]  # after --: the trial's


def test_options_the_command_does_not_take_are_trial_overrides():
    args = parse("--n-trials", "3", "s.yaml", "--trainer.max_epochs", "1", "--grace", "30")
    assert (args.n_trials, args.grace, args.workers, args.out) == (3, 30, 1, None)
    assert args.overrides == ["--trainer.max_epochs", "1"]


def test_bad_values_and_executors_are_errors(capsys):
    with pytest.raises(SystemExit):
        parse("s.yaml", "--workers", "two")
    assert "--workers: invalid int value: 'two'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse("s.yaml", "--executor", "kubernetes")
    assert "invalid choice: 'kubernetes'" in capsys.readouterr().err
