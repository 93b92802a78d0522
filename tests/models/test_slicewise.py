"""2.5D timm U-Net: 3D-in/3D-out shapes, slice context along Z, channel order, errors."""

from __future__ import annotations

import pytest
import torch

from cogimg import models
from cogimg.models import SliceWiseUNet


def _model(**kwargs) -> SliceWiseUNet:
    torch.manual_seed(0)
    kwargs = {"in_channels": 2, "out_channels": 3, "patch_size": (32, 32, 8), **kwargs}
    return models.get("unet2d_timm", **kwargs).eval()


def test_output_matches_input_spatial_shape_for_odd_sizes():
    model = _model()
    with torch.no_grad():
        out = model(torch.randn(2, 2, 33, 27, 5))
    assert out.shape == (2, 3, 33, 27, 5)


def test_encoder_whose_first_map_is_at_stride_4_reaches_full_resolution():
    model = _model(encoder="convnext_atto", decoder_channels=(32, 16, 16, 8))
    with torch.no_grad():
        assert model(torch.randn(1, 2, 35, 21, 3)).shape == (1, 3, 35, 21, 3)


def test_output_for_slice_z_depends_only_on_its_context():
    model = _model(context_slices=3)  # eval mode: BatchNorm uses running statistics
    x = torch.randn(1, 2, 32, 32, 9)
    perturbed = x.clone()
    perturbed[..., 8] += 5.0  # last slice: only outputs z = 7, 8 see it
    with torch.no_grad():
        before, after = model(x), model(perturbed)
    torch.testing.assert_close(after[..., :7], before[..., :7], rtol=1e-5, atol=1e-5)
    for z in (7, 8):
        assert (after[..., z] - before[..., z]).abs().max() > 1e-3


def test_slices_are_stacked_modality_major_with_edge_slices_repeated():
    model = _model(context_slices=3)
    x = torch.randn(1, 2, 32, 32, 6)
    with torch.no_grad():
        out = model(x)
        for z, (lo, hi) in {3: (2, 4), 0: (0, 1), 5: (4, 5)}.items():
            # channels: modality 0 at z-1, z, z+1, then modality 1 (edges repeat the slice)
            stack = torch.stack(
                [x[:, c, :, :, i] for c in range(2) for i in (lo, z, hi)], dim=1
            )
            torch.testing.assert_close(model.forward_slices(stack), out[..., z], rtol=1e-5, atol=1e-5)


def test_single_slice_context_is_plain_2d():
    model = _model(context_slices=1)
    assert model.encoder.conv1.in_channels == 2
    x = torch.randn(1, 2, 32, 32, 4)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[..., 1], model.forward_slices(x[..., 1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"context_slices": 2}, "context_slices must be a positive odd int"),
        ({"encoder": "resnet_18"}, "unknown timm encoder 'resnet_18'; did you mean .*resnet18"),
        ({"encoder": "vit_tiny_patch16_224"}, r"strides \[16, 16, 16\].*double"),
        ({"decoder_channels": (16, 16)}, "5 feature levels, so decoder_channels needs 5 entries"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model(**kwargs)


def test_wrong_input_channels_are_rejected():
    with pytest.raises(ValueError, match=r"expected input \(B, 2, X, Y, Z\), got \(1, 3, 8, 8, 8\)"):
        _model()(torch.zeros(1, 3, 8, 8, 8))
