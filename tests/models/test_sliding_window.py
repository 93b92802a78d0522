"""Sliding-window inference (:mod:`cogimg.models.sliding_window`) agrees with MONAI and handles
TTA and odd volume sizes."""

import pytest
import torch
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from cogimg.models.sliding_window import flip_combinations, sliding_window_predict


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return UNet(3, 2, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1).eval()


def test_matches_monai_gaussian_sliding_window(net):
    image = torch.randn(1, 2, 37, 41, 29)
    ours = sliding_window_predict(net, image, (16, 16, 16), overlap=0.5, sw_batch_size=3)
    with torch.no_grad():
        ref = torch.softmax(
            sliding_window_inference(image, (16, 16, 16), 3, net, overlap=0.5, mode="gaussian"), 1
        )
    assert ours.shape == (1, 3, 37, 41, 29)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.sum(1), torch.ones(1, 37, 41, 29))


def test_flip_tta_is_mirror_invariant(net):
    """With all mirrors averaged, predicting a mirrored volume gives the mirrored output."""
    axes = (0, 1, 2)
    # Window positions are not mirror-symmetric unless the volume tiles exactly; use 16-multiples.
    image = torch.randn(1, 2, 32, 32, 16)
    p = sliding_window_predict(net, image, (16, 16, 16), overlap=0.0, tta_flip_axes=axes)
    p_mirrored = sliding_window_predict(net, torch.flip(image, [2]), (16, 16, 16), overlap=0.0,
                                        tta_flip_axes=axes)
    torch.testing.assert_close(torch.flip(p_mirrored, [2]), p, atol=1e-5, rtol=0)


def test_flip_combinations():
    assert flip_combinations(()) == [()]
    assert flip_combinations((0, 2)) == [(), (0,), (2,), (0, 2)]


def test_rejects_non_5d_input(net):
    with pytest.raises(ValueError, match=r"\(B, C, X, Y, Z\)"):
        sliding_window_predict(net, torch.randn(2, 8, 8, 8), (8, 8, 8))
