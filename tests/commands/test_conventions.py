"""The CLI convention, command by command (in process, through ``cogimg.cli.main``).

Every plain command registered in cogimg/cli.py: ``--help`` exits 0 and names ``--out`` when
the command writes files; an unknown option and a missing required argument exit 2; a data
path that does not exist exits 2 (nothing run) with one line on stderr and no traceback. Flags are spelled ``--out``,
``--overwrite`` and ``--n-folds`` everywhere.
"""

from __future__ import annotations

import argparse

import pytest

from cogimg import cli
from cogimg.commands._common import DataError, UsageError, run_command
from cogimg.errors import ConfigError
from cogimg.inference.checkpoint import CheckpointError

MISSING = "/nonexistent/cogimg-test"

#: command -> arguments naming a data path that does not exist (otherwise valid)
BAD_DATA = {
    "check": ["check", MISSING],
    "split": ["split", MISSING, "--out", "{out}/split.json"],
    "synth": ["synth", "--out", MISSING, "--preview"],
    "models": None,  # reads no data
    "predict": ["predict", "--ckpt", f"{MISSING}.ckpt", "--input", MISSING, "--out", "{out}"],
    "explain": ["explain", "--ckpt", f"{MISSING}.ckpt", "--input", MISSING,
                "--method", "gradcam", "--out", "{out}"],
    "evaluate": ["evaluate", "--protocol", "leave-site-out", "--config", f"{MISSING}.yaml",
                 "--out", "{out}"],
    "sweep": ["sweep", f"{MISSING}.yaml", "--out", "{out}"],
    "leaderboard": ["leaderboard", MISSING, "--out", "{out}"],
    "figures": ["figures", MISSING, "--out", "{out}"],
    "report": ["report", MISSING, "--out", "{out}/report.html"],
    "benchmark": ["benchmark", f"{MISSING}.yaml", "--out", "{out}"],
    "study": ["study", f"{MISSING}.yaml", "--out", "{out}"],
    "demo": ["demo", "--benchmark", f"{MISSING}.yaml", "--out", "{out}"],
    "outcome": ["outcome", "--config", f"{MISSING}.yaml", "--out", "{out}"],
    "lsm": ["lsm", "--mask-dir", MISSING, "--scores", f"{MISSING}.tsv", "--out", "{out}"],
    "annotate": ["annotate", "--ckpt", f"{MISSING}.ckpt", "--input", MISSING, "--out", "{out}"],
    "clinical": ["clinical", "--seg-ckpt", f"{MISSING}.ckpt", "--input", MISSING,
                 "--out", "{out}", "--no-progress"],
    "plan": ["plan", MISSING, "--out", "{out}", "--no-progress"],
    "postprocess": ["postprocess", "--ckpt", f"{MISSING}.ckpt", "--out", "{out}"],
}
#: commands that write nothing (so take no --out)
READ_ONLY = {"models"}
COMMANDS = sorted(cli.PLAIN_SUBCOMMANDS)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def exit_code(argv: list[str]) -> int:
    """``cli.main``'s exit code, whether it returns it or argparse raises SystemExit."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def test_every_registered_command_is_covered():
    assert set(BAD_DATA) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_and_names_out(command, capsys):
    assert exit_code([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: cogimg " + command)
    if command not in READ_ONLY:
        assert "--out" in text


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_follow_the_convention(command):
    options = {o for a in subparsers()[command]._actions for o in a.option_strings}
    assert not options & {"--output", "--force", "--folds", "-o", "-f"}, options
    assert ("--out" in options) == (command not in READ_ONLY)


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_exits_2(command, tmp_path, capsys):
    # with every required argument given, so that the unknown option is the only error
    argv = [a.replace("{out}", str(tmp_path / "out")) for a in BAD_DATA[command] or [command]]
    assert exit_code([argv[0], "--no-such-option", *argv[1:]]) == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_required_argument_exits_2(command, capsys):
    required = [a for a in subparsers()[command]._actions
                if a.required and not isinstance(a, argparse._HelpAction)]
    if not required:
        pytest.skip(f"cogimg {command} has no required argument")
    assert exit_code([command]) == 2
    assert "the following arguments are required" in capsys.readouterr().err


@pytest.mark.parametrize("command", [c for c in COMMANDS if BAD_DATA[c]])
def test_a_missing_data_path_exits_2_with_one_line(command, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [a.replace("{out}", str(out)) for a in BAD_DATA[command]]
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cogimg {command}: error: ") and err.count("\n") == 1, err
    assert MISSING in err and "Traceback" not in err
    assert not out.exists()  # nothing written


def test_top_level_help_documents_the_convention(capsys):
    assert exit_code(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--out PATH", "--overwrite", "--n-folds K"):
        assert flag in text
    assert "exit codes" in text and "2  usage error, nothing run" in text
    assert "1  some inputs failed and were listed" in text and "3  flagged" in text


def test_run_command_maps_exceptions_to_exit_codes(capsys, monkeypatch):
    monkeypatch.delenv("COGIMG_TRACEBACK", raising=False)

    def raises(exc):
        def body():
            raise exc
        return body

    assert run_command("x", lambda: None) == 0
    assert run_command("x", lambda: 3) == 3
    assert run_command("x", raises(UsageError("--a and --b conflict"))) == 2
    assert capsys.readouterr().err == "cogimg x: error: --a and --b conflict\n"
    assert run_command("x", raises(DataError("a.tsv: no participant_id\ncolumn"))) == 1
    assert capsys.readouterr().err == "cogimg x: error: a.tsv: no participant_id column\n"
    assert run_command("x", raises(KeyError("model.name"))) == 1
    assert capsys.readouterr().err == "cogimg x: error: model.name\n"
    assert run_command("x", raises(ValueError("b.nii.gz: NaN voxels"))) == 1
    assert run_command("x", raises(FileNotFoundError("b.nii.gz does not exist"))) == 2
    assert run_command("x", raises(CheckpointError("m.ckpt: no hyper_parameters"))) == 2
    assert run_command("x", raises(ConfigError("s.yaml: seeds: expected a list"))) == 2
    with pytest.raises(RuntimeError):  # a bug keeps its traceback
        run_command("x", raises(RuntimeError("bug")))
    monkeypatch.setenv("COGIMG_TRACEBACK", "1")
    with pytest.raises(DataError):
        run_command("x", raises(DataError("shown with its traceback")))


def test_debug_flag_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.delenv("COGIMG_TRACEBACK", raising=False)
    assert exit_code(["check", MISSING]) == 2
    with pytest.raises(FileNotFoundError, match=MISSING):
        cli.main(["--debug", "check", MISSING])
