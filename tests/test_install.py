"""The README's install gives a working stack: torch + torchvision that load together with
timm (torchvision's compiled ops need a matching torch), and the console script."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_torch_torchvision_timm_import_together():
    import timm
    import torch
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # compiled op works: torch and torchvision match
    model = timm.create_model("resnet18", pretrained=False, num_classes=3, in_chans=2)
    assert model.eval()(torch.zeros(1, 2, 32, 32)).shape == (1, 3)


def test_constraints_pin_the_matching_pair():
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)", (REPO / "constraints.txt").read_text(encoding="utf-8"), re.MULTILINE))
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}


def test_console_script_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "cogimg", "--help"], capture_output=True,
                         text=True, encoding="utf-8", check=True).stdout
    for command in ("fit", "validate", "test", "check", "split", "synth", "models", "predict", "demo"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


@pytest.mark.parametrize("marker", ["main-command", "test-command"])
def test_readme_has_both_setup_commands_and_ci_uses_the_test_one(marker):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(rf"<!-- {marker} -->\n```bash\n(.+)\n```", readme)
    assert block, f"README.md lacks the {marker} block"
    command = block.group(1)
    assert "-c constraints.txt" in command and "python3 -m venv .venv" in command
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "<!-- test-command -->" in ci  # .ci/run executes exactly the README's test command


@pytest.mark.parametrize("folder", ["experiments", "sweeps"])
def test_shipped_configs_are_ascii(folder):
    """LightningCLI (jsonargparse) opens ``--config`` files in the locale's encoding, so a
    non-ASCII character in a shipped YAML breaks ``cogimg fit`` on a machine whose locale
    is ASCII (seen on CI: ``LC_ALL=POSIX``, ``PYTHONUTF8=0``)."""
    offending = [str(p.relative_to(REPO)) for p in sorted((REPO / folder).rglob("*.yaml"))
                 if not p.read_bytes().isascii()]
    assert not offending
