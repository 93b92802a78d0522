"""bf16-mixed in a config runs in bfloat16 only where the device computes it natively."""

import pytest
import torch

from cogimg.tracking import experiment_cli
from cogimg.tracking.experiment_cli import effective_precision


def test_float32_and_16_bit_requests_pass_through():
    for precision in ("32-true", "16-mixed", None, 32):
        assert effective_precision(precision, "cpu") == precision


def test_bf16_without_native_support_falls_back_to_float32_with_a_warning(monkeypatch):
    monkeypatch.setattr(experiment_cli, "native_bf16", lambda device: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16.*'32-true'"):
        assert effective_precision("bf16-mixed", "auto") == "32-true"


def test_bf16_with_native_support_is_kept(monkeypatch):
    seen = []
    monkeypatch.setattr(experiment_cli, "native_bf16", lambda device: seen.append(device) or True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert effective_precision("bf16-mixed", "auto") == "bf16-mixed"
    assert seen == ["cpu"]  # accelerator auto without CUDA is the CPU
    assert effective_precision("bf16-mixed", "mps") == "bf16-mixed"  # not ours to judge


def test_native_bf16_probe_matches_torch_on_this_cpu():
    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert experiment_cli.native_bf16("cpu") == expected
