"""``cogimg evaluate``: parse and call (the protocol runs in tests/paradigms/
test_adaptation_protocol.py); its variant list is the protocol's, and an earlier run's result
files are refused before any training unless ``--overwrite``."""

from __future__ import annotations

from pathlib import Path

from cogimg.cli import main
from cogimg.commands import evaluate

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "ad" / "lso_resnet10_t1.yaml"


def test_variants_are_the_protocols():
    from cogimg.paradigms.adaptation.protocol import VARIANTS

    assert evaluate.VARIANTS == VARIANTS


def test_an_earlier_run_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "lso_summary.csv").write_text("variant,score\n", encoding="utf-8")
    argv = ["evaluate", "--protocol", "leave-site-out", "--config", str(CONFIG),
            "--out", str(tmp_path), "--data-root", str(tmp_path / "no_cohort")]
    assert main(argv) == 2  # outputs in the way: nothing run
    err = capsys.readouterr().err
    assert err == (f"cogimg evaluate: error: {tmp_path / 'lso_summary.csv'} exists; "
                   "pass --overwrite or choose another --out\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lso_summary.csv"]  # no split made
    # with --overwrite it gets past the check, to the missing cohort
    assert main([*argv, "--overwrite"]) == 1
    assert "no_cohort" in capsys.readouterr().err


def test_unknown_variant_is_a_usage_error(capsys):
    assert main(["evaluate", "--protocol", "leave-site-out", "--config", str(CONFIG),
                 "--variants", "dann,magic"]) == 2
    assert "unknown variant(s) ['magic']" in capsys.readouterr().err
