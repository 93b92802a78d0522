"""Registry contract and every segmentation entry: build, forward shape, finite gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cogimg import models
from cogimg.models import registry

SEGMENTATION_MODELS = [
    "attention_unet", "dynunet", "segresnet", "swinunetr", "unet", "unet2d_timm", "unetr",
]


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that tests may register into without leaking entries."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_available_lists_the_seven_segmentation_models():
    assert models.available("segmentation") == SEGMENTATION_MODELS
    assert set(SEGMENTATION_MODELS) <= set(models.available())


def test_available_rejects_unknown_task_tag():
    with pytest.raises(ValueError, match="segmentaion.*known tasks: segmentation"):
        models.available("segmentaion")


def test_unknown_model_name_lists_available():
    with pytest.raises(KeyError, match="unknown model 'unet3'; available models: .*swinunetr.*unet2d_timm"):
        models.get("unet3", in_channels=1, out_channels=2, patch_size=(32, 32, 32))


def test_unknown_kwarg_names_kwarg_and_model():
    with pytest.raises(TypeError, match=r"model 'unetr' got unexpected keyword argument\(s\) 'img_size'.*hidden_size"):
        models.get("unetr", in_channels=1, out_channels=2, patch_size=(32, 32, 32), img_size=32)


def test_missing_core_kwarg_is_named():
    with pytest.raises(TypeError, match="model 'unet' needs keyword argument.*'patch_size'"):
        models.get("unet", in_channels=1, out_channels=2)


@pytest.mark.parametrize(
    ("name", "patch_size", "message"),
    [
        ("swinunetr", (48, 48, 48), r"divisible by 32 .*Nearest valid size: \(64, 64, 64\)"),
        ("unetr", (32, 32, 40), r"divisible by 16 .*axes \[2\].*\(32, 32, 48\)"),
        ("unet", (30, 32, 32), r"divisible by 16 .*axes \[0\]"),
        ("segresnet", (32, 32, 12), r"divisible by 8"),
        ("dynunet", (32, 24, 32), r"divisible by 16"),
        ("attention_unet", (32, 32, 33), r"divisible by 16"),
        ("unet", (16, 16, 16), r"single voxel at the coarsest level.*\(32, 32, 32\)"),
        ("swinunetr", (32, 32, 32), r"single voxel at the coarsest level.*\(64, 64, 64\)"),
        ("unet", (32, 32), r"three positive ints"),
        ("unet2d_timm", (32, 0, 32), r"three positive ints"),
    ],
)
def test_invalid_patch_size_is_rejected_at_build(name, patch_size, message):
    with pytest.raises(ValueError, match=f"{name}: patch_size.*{message}"):
        models.get(name, in_channels=2, out_channels=2, patch_size=patch_size)


def test_invalid_channels_are_rejected():
    with pytest.raises(ValueError, match="unet: in_channels must be a positive int, got 0"):
        models.get("unet", in_channels=0, out_channels=2, patch_size=(32, 32, 32))


#: Smallest patch each model trains on (SwinUNETR: multiples of 32, coarsest level > 1 voxel).
SMALL_PATCH = {"swinunetr": (64, 32, 32), "segresnet": (16, 8, 24), "unetr": (16, 32, 16)}


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
def test_segmentation_model_forward_shape_and_finite_gradients(name):
    torch.manual_seed(0)
    patch = SMALL_PATCH.get(name, (32, 32, 16))
    model = models.get(name, in_channels=2, out_channels=3, patch_size=patch)
    out = model(torch.randn(1, 2, *patch))
    assert out.shape == (1, 3, *patch)
    out.square().mean().backward()
    # every parameter takes part (DDP without find_unused_parameters needs that)
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_dynunet_deep_supervision_outputs_and_loss():
    from monai.losses import DeepSupervisionLoss, DiceCELoss

    model = models.get("dynunet", in_channels=2, out_channels=2, patch_size=(32, 32, 32),
                       deep_supervision=True, deep_supr_num=2)
    x = torch.randn(1, 2, 32, 32, 32)
    stacked = model.train()(x)
    assert stacked.shape == (1, 3, 2, 32, 32, 32)  # main output + 2 heads, as MONAI stacks them
    heads = models.deep_supervision_outputs(stacked)
    assert [h.shape for h in heads] == [(1, 2, 32, 32, 32)] * 3
    torch.testing.assert_close(heads[0], stacked[:, 0])
    target = torch.randint(0, 2, (1, 1, 32, 32, 32))
    loss = DeepSupervisionLoss(DiceCELoss(to_onehot_y=True, softmax=True))(heads, target)
    loss.backward()
    assert torch.isfinite(loss)
    with torch.no_grad():
        assert model.eval()(x).shape == (1, 2, 32, 32, 32)  # eval: main output only


def test_deep_supervision_outputs_passes_plain_outputs_and_rejects_bad_shapes():
    plain = torch.zeros(1, 2, 4, 4, 4)
    assert models.deep_supervision_outputs(plain)[0] is plain
    assert models.deep_supervision_outputs([plain, plain]) == [plain, plain]
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 4\)"):
        models.deep_supervision_outputs(torch.zeros(1, 2, 4))


def test_dynunet_rejects_too_many_supervision_heads():
    with pytest.raises(ValueError, match=r"deep_supr_num must be in \[1, 3\]"):
        models.get("dynunet", in_channels=1, out_channels=2, patch_size=(32, 32, 32),
                   deep_supervision=True, deep_supr_num=4)


def test_builder_kwargs_scale_the_model():
    small = models.get("unetr", in_channels=1, out_channels=2, patch_size=(32, 32, 32))
    wide = models.get("unetr", in_channels=1, out_channels=2, patch_size=(32, 32, 32),
                      hidden_size=384, mlp_dim=1536, num_heads=6)
    assert models.profile(wide)["params"] > 2 * models.profile(small)["params"]


def test_register_tags_a_builder_with_several_tasks(scratch_registry):
    @models.register("toy_backbone", task=("classification", "detection"))
    def toy_backbone(*, in_channels: int = 1, num_classes: int = 2) -> nn.Module:
        """A toy."""
        return nn.Conv3d(in_channels, num_classes, 1)

    assert "toy_backbone" in models.available("classification")
    assert "toy_backbone" in models.available("detection")
    assert "toy_backbone" not in models.available("segmentation")
    assert isinstance(models.get("toy_backbone", num_classes=3), nn.Conv3d)
    assert models.spec("toy_backbone").summary == "A toy."


def test_register_refuses_duplicates_positional_args_and_unknown_tasks(scratch_registry):
    with pytest.raises(ValueError, match="'unet' is already registered"):
        models.register("unet", task="segmentation")(lambda *, in_channels=1: nn.Identity())
    with pytest.raises(TypeError, match="'in_channels' must be keyword-only"):
        models.register("toy_positional", task="segmentation")(lambda in_channels=1: nn.Identity())
    with pytest.raises(TypeError, match="'kwargs' must be keyword-only"):
        models.register("toy_varkw", task="segmentation")(lambda **kwargs: nn.Identity())
    with pytest.raises(ValueError, match="unknown task tag 'segmentaton'"):
        models.register("toy_tag", task="segmentaton")
    with pytest.raises(ValueError, match="lower case"):
        models.register("Toy-Net", task="segmentation")
    assert "toy_positional" not in models.available()
