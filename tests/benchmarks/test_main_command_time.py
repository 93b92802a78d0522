"""benchmarks/main_command_time.py: the command it times is the README's, and a run that
did not write the main job's outputs is an error naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.main_command_time import demo_outputs, main_command, out_folder

REPO = Path(__file__).resolve().parents[2]


def test_the_timed_command_is_the_readme_main_command_and_writes_to_its_out_folder():
    command = main_command(REPO / "README.md")
    assert command.startswith("python3 -m venv .venv && ") and "cogimg demo" in command
    assert out_folder(command) == "runs/demo"


def test_a_readme_without_the_marker_or_an_out_folder_is_named(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n```bash\nmake\n```\n")
    with pytest.raises(SystemExit, match="README.md: no command after"):
        main_command(readme)
    with pytest.raises(SystemExit, match="no --out folder"):
        out_folder("python3 -m venv .venv && cogimg demo")


def test_missing_outputs_are_named(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "leaderboard.md").write_text("|")
    with pytest.raises(SystemExit, match="report.html"):
        demo_outputs(tmp_path)
    (tmp_path / "report.html").write_text("<html>")
    with pytest.raises(SystemExit, match="figures"):
        demo_outputs(tmp_path)  # an empty figures folder
    (tmp_path / "figures" / "dice.png").write_bytes(b"png")
    assert demo_outputs(tmp_path) == ["leaderboard.md", "report.html", "figures"]
