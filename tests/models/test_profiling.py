"""Parameter and FLOP counts against hand-computed numbers."""

from __future__ import annotations

import pytest
from torch import nn

from cogimg import models


def test_params_equal_numel_sum_and_trainable_excludes_frozen():
    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.InstanceNorm3d(4, affine=True), nn.Conv3d(4, 2, 1))
    model[0].weight.requires_grad_(False)
    info = models.profile(model)
    assert info["params"] == sum(p.numel() for p in model.parameters()) == 2 * 4 * 27 + 4 + 8 + 8 + 2
    assert info["trainable_params"] == info["params"] - 2 * 4 * 27
    assert info["macs"] is None and info["flops"] is None


def test_conv3d_flops_match_hand_count():
    # output (1, 4, 8, 8, 8) = 2048 values, each 2 in-channels x 27 taps = 54 MACs
    conv = nn.Conv3d(2, 4, kernel_size=3, padding=1, bias=False)
    info = models.profile(conv, (1, 2, 8, 8, 8))
    assert info["macs"] == 2048 * 54 == 110_592
    assert info["flops"] == 2 * info["macs"]


def test_strided_conv_and_linear_flops_match_hand_count():
    # output (2, 5, 4, 3, 2) = 240 values x (3 channels x 2^3 taps) = 5760 MACs
    strided = nn.Conv3d(3, 5, kernel_size=2, stride=2)
    assert models.profile(strided, (2, 3, 8, 6, 4))["macs"] == 5760
    assert models.profile(nn.Linear(10, 7), (3, 10))["flops"] == 2 * 3 * 10 * 7


def test_meta_and_real_forward_count_the_same_and_leave_model_untouched():
    model = models.get("unet", in_channels=1, out_channels=2, patch_size=(32, 32, 32)).train()
    meta = models.count_flops(model, (1, 1, 32, 32, 32))
    real = models.count_flops(model, (1, 1, 32, 32, 32), device="cpu")
    assert meta == real > 0
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_invalid_input_shape_is_rejected():
    with pytest.raises(ValueError, match=r"input_shape must be positive ints.*\(1, 0, 8\)"):
        models.profile(nn.Conv1d(1, 1, 1), (1, 0, 8))


def test_flops_scale_with_input_volume():
    model = models.get("segresnet", in_channels=2, out_channels=2, patch_size=(32, 32, 32))
    small = models.profile(model, (1, 2, 16, 16, 16))["flops"]
    large = models.profile(model, (1, 2, 32, 32, 32))["flops"]
    assert large == 8 * small  # fully convolutional: cost proportional to voxels


def test_count_parameters_counts_shared_once_and_can_skip_frozen():
    linear = nn.Linear(3, 2)  # 3 * 2 weights + 2 biases
    tied = nn.Sequential(linear, nn.ReLU(), linear, nn.Linear(2, 1))  # + 2 + 1
    assert models.count_parameters(tied) == 8 + 3
    tied[3].weight.requires_grad_(False)
    assert models.count_parameters(tied, trainable_only=True) == 8 + 1
    assert models.count_parameters(nn.ReLU()) == 0
