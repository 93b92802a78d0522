"""Classification backbones: one interface (logits, features, head reset), shape checks,
and the 2.5D attention-MIL model's slice stacks and pooling."""

from __future__ import annotations

import pytest
import torch

from cogimg import models
from cogimg.models import classification as _classification  # noqa: F401  (registers)
from cogimg.models import mil
from cogimg.models.classification import ClassifierNet

SHAPE = (16, 16, 16)
EXPECTED = {"resnet10_3d", "resnet18_3d", "resnet50_3d", "densenet121_3d", "vit_3d", "timm_2p5d"}


def test_registry_lists_the_classification_backbones():
    assert EXPECTED <= set(models.available("classification"))
    assert not EXPECTED & set(models.available("segmentation"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_logits_features_and_gradients(name):
    torch.manual_seed(0)
    shape = (32, 32, 32) if name == "densenet121_3d" else SHAPE  # its minimum
    net = models.get(name, in_channels=2, num_classes=3, input_shape=shape)
    assert isinstance(net, ClassifierNet)
    x = torch.randn(2, 2, *shape)
    logits = net(x)
    assert logits.shape == (2, 3)
    features = net.forward_features(x)
    assert features.shape == (2, net.num_features)
    logits.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    net.eval()
    net.reset_classifier(0)  # timm's convention: the model returns its features
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.forward_features(x))


def test_default_cnn_is_sized_for_cpu():
    """The default 3D CNN keeps a quarter of the published ResNet-10 widths."""
    net = models.get("resnet10_3d", in_channels=1, num_classes=3, input_shape=(48, 56, 48))
    assert sum(p.numel() for p in net.parameters()) == 903_027
    assert net.num_features == 128
    published = models.get("resnet10_3d", in_channels=1, num_classes=3, input_shape=(48, 56, 48),
                           block_inplanes=(64, 128, 256, 512), conv1_stride=1)
    assert sum(p.numel() for p in published.parameters()) > 14e6


@pytest.mark.parametrize("shape", [(16, 16, 16), (20, 24, 12), (9, 7, 5)])
def test_resnets_take_any_shape(shape):
    net = models.get("resnet10_3d", in_channels=1, num_classes=2, input_shape=shape).eval()
    assert net(torch.randn(1, 1, *shape)).shape == (1, 2)


def test_bad_arguments_name_the_model_and_the_fix():
    with pytest.raises(ValueError, match=r"vit_3d: input_shape \(20, 16, 16\).*nearest valid shape: \(24, 16, 16\)"):
        models.get("vit_3d", in_channels=1, num_classes=2, input_shape=(20, 16, 16))
    with pytest.raises(ValueError, match="densenet121_3d: input_shape .* at least 32"):
        models.get("densenet121_3d", in_channels=1, num_classes=2, input_shape=(32, 32, 16))
    with pytest.raises(ValueError, match="resnet10_3d: num_classes"):
        models.get("resnet10_3d", in_channels=1, num_classes=0, input_shape=SHAPE)
    with pytest.raises(ValueError, match="input_shape must be three"):
        models.get("resnet18_3d", in_channels=1, num_classes=2, input_shape=(16, 16))
    net = models.get("resnet10_3d", in_channels=2, num_classes=2, input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"resnet10_3d: expected input \(B, 2, X, Y, Z\)"):
        net(torch.randn(1, 1, *SHAPE))
    with pytest.raises(ValueError, match="did you mean resnet18"):
        models.get("timm_2p5d", in_channels=1, num_classes=2, input_shape=SHAPE, backbone="resnet181")
    with pytest.raises(ValueError, match="context_slices"):
        models.get("timm_2p5d", in_channels=1, num_classes=2, input_shape=SHAPE, context_slices=2)
    with pytest.raises(TypeError, match="unexpected keyword"):
        models.get("densenet121_3d", in_channels=1, num_classes=2, input_shape=SHAPE, widths=3)


@pytest.mark.parametrize("backbone", ["resnet18", "vit_tiny_patch16_224", "efficientnet_b0"])
def test_timm_2p5d_takes_cnns_and_vits_of_any_slice_size(backbone):
    shape = (24, 28, 6)  # 28 is no multiple of a ViT's 16-pixel patch: padded dynamically
    net = models.get("timm_2p5d", in_channels=2, num_classes=3, input_shape=shape, backbone=backbone)
    out = net(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3)  # 2 × 3 slice stacks of 6 channels went through the backbone
    assert net.encoder.backbone.eval()(torch.zeros(1, 6, *shape[:2])).shape[-1] == net.num_features


def test_timm_backbone_that_cannot_take_the_slices_is_one_clear_error():
    with pytest.raises(ValueError, match="cannot take"):
        mil.create_timm_backbone("convnext_tiny", 3, (16, 16), pretrained=False)  # stride 32


def test_timm_backbone_kwargs_reach_timm():
    net = models.get("timm_2p5d", in_channels=1, num_classes=2, input_shape=(24, 28, 4),
                     backbone="vit_tiny_patch16_224",
                     backbone_kwargs={"patch_size": 8, "global_pool": "avg", "depth": 2})
    vit = net.encoder.backbone
    assert vit.patch_embed.patch_size == (8, 8) and vit.global_pool == "avg" and len(vit.blocks) == 2
    tokens = vit.eval().forward_features(torch.zeros(1, 3, 24, 28)).shape[1]
    assert tokens == 1 + 3 * 4  # class token + 24 x 28 slices padded to 8-pixel patches
    assert net(torch.randn(2, 1, 24, 28, 4)).shape == (2, 2)


def test_timm_backbone_kwargs_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"may not set \['in_chans'\]"):
        mil.create_timm_backbone("resnet18", 3, (32, 32), False, {"in_chans": 1})
    with pytest.raises(ValueError, match="could not build timm model 'resnet18' with backbone_kwargs"):
        mil.create_timm_backbone("resnet18", 3, (32, 32), False, {"no_such_option": 1})


def test_slice_stacks_are_modality_major_with_edge_context():
    encoder = mil.SliceMILEncoder(torch.nn.Identity(), 1, in_channels=2, context_slices=3,
                                  slice_stride=2)
    z = torch.arange(5, dtype=torch.float32)
    x = torch.stack([z, 100 + z])[None, :, None, None, :].expand(1, 2, 2, 2, 5)  # value = slice (+100)
    stacks = encoder.instances(x)  # centres 0, 2, 4
    assert stacks.shape == (1, 3, 6, 2, 2)
    assert encoder.last_centres.tolist() == [0, 2, 4]
    assert stacks[0, :, :, 0, 0].tolist() == [
        [0, 0, 1, 100, 100, 101],  # slice 0: the edge slice repeated below
        [1, 2, 3, 101, 102, 103],
        [3, 4, 4, 103, 104, 104],  # slice 4: repeated above
    ]


def test_gated_attention_pooling_weights_and_mask():
    torch.manual_seed(0)
    pool = mil.GatedAttentionPooling(8, hidden=4)
    h = torch.randn(3, 5, 8)
    pooled, weights = pool(h)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(pooled, torch.einsum("bn,bnd->bd", weights, h))
    perm = torch.randperm(5)  # a bag is a set: order does not matter
    torch.testing.assert_close(pool(h[:, perm])[0], pooled)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    pooled, weights = pool(h, mask)
    assert weights[~mask].abs().max() == 0
    torch.testing.assert_close(pooled[1], h[1, 0])  # one member: itself
    assert pooled[2].abs().max() == 0  # nothing present: zeros, not NaN


def test_mil_attention_is_exposed_after_forward():
    net = models.get("timm_2p5d", in_channels=1, num_classes=2, input_shape=(16, 16, 8),
                     slice_stride=1).eval()
    with torch.no_grad():
        net(torch.randn(2, 1, 16, 16, 8))
    assert net.encoder.last_attention.shape == (2, 8)
    torch.testing.assert_close(net.encoder.last_attention.sum(dim=1), torch.ones(2))
