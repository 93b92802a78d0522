"""``cogimg models``: the listing, the per-model error row and argument checking."""

from __future__ import annotations

import argparse

import pytest

from cogimg.commands import models as command


def _run(argv: list[str], capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    code = command.run(parser.parse_args(argv))
    return code, capsys.readouterr().out


def test_lists_params_and_gflops_and_explains_models_that_cannot_take_the_shape(capsys):
    code, out = _run(["--task", "segmentation", "--input", "1,32,32,16"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"attention_unet", "dynunet", "segresnet", "swinunetr", "unet",
                         "unet2d_timm", "unetr"}
    assert "n/a" in rows["swinunetr"] and "divisible by 32" in rows["swinunetr"]
    params_m, gflops = rows["unet"].split()[2:4]
    assert float(params_m) == pytest.approx(4.81, abs=0.01) and float(gflops) > 0


def test_names_only_and_unknown_task(capsys):
    code, out = _run(["--names-only"], capsys)
    assert code == 0 and "unet2d_timm" in out
    from cogimg.cli import main

    assert main(["models", "--task", "segmentaion"]) == 2  # a usage error
    err = capsys.readouterr().err
    assert err.startswith("cogimg models: error: ") and "unknown task tag 'segmentaion'" in err


def test_input_shape_is_validated():
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--input", "2,64,x,64"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--input", "0,64,64,64"])


def test_command_module_imports_no_heavy_library():
    import subprocess
    import sys

    code = "import sys, cogimg.commands.models; print(sorted({'torch','monai','timm'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "[]"


def test_core_kwargs_route_the_shape_by_task():
    from cogimg.models import ModelSpec

    def classifier(*, in_channels: int, num_classes: int, input_shape, patch_size: int = 8):
        """A classifier whose own patch_size is a ViT token size."""

    def segmenter(*, in_channels: int, out_channels: int, patch_size):
        """A segmenter."""

    cls = ModelSpec("toy_cls", frozenset({"classification"}), classifier)
    seg = ModelSpec("toy_seg", frozenset({"segmentation"}), segmenter)
    assert command.core_kwargs(cls, (2, 48, 56, 48), 3) == {
        "in_channels": 2, "num_classes": 3, "input_shape": (48, 56, 48)}
    assert command.core_kwargs(seg, (2, 64, 64, 32), 2) == {
        "in_channels": 2, "out_channels": 2, "patch_size": (64, 64, 32)}
