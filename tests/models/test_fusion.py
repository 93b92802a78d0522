"""Fusion models: every strategy predicts, missing modalities are ignored (intermediate,
late) or zero-filled (early) with one warning, modality dropout never drops everything."""

from __future__ import annotations

import warnings

import pytest
import torch

from cogimg.models.fusion import (
    IntermediateFusion,
    LateFusion,
    ModalityDropout,
    TabularOnly,
    build_fusion_model,
)

SHAPE = (8, 8, 8)
MODALITIES = ("T1w", "pet_amyloid")
TINY = {"block_inplanes": [4, 8, 8, 8]}


def build(fusion, **kw):
    torch.manual_seed(0)
    args = {"backbone": "resnet10_3d", "modalities": MODALITIES, "num_classes": 3,
            "input_shape": SHAPE, "backbone_kwargs": TINY}
    return build_fusion_model(fusion, **{**args, **kw})


def batch(n=4, features=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 2, *SHAPE, generator=g), torch.ones(n, 2),
            torch.randn(n, features, generator=g))


# --------------------------------------------------------------------------- dropout
def test_modality_dropout_never_drops_every_modality():
    torch.manual_seed(0)
    drop = ModalityDropout(0.9).train()
    availability = torch.ones(2000, 3)
    availability[:500, 1:] = 0  # only modality 0: must be kept
    availability[500:600] = 0  # nothing available: stays so
    kept = drop(availability)
    assert (kept <= availability).all()
    assert (kept[:500, 0] == 1).all()
    assert (kept[500:600] == 0).all()
    assert (kept[600:].sum(dim=1) >= 1).all()
    # Of 3 available modalities ~ p³ of rows lose all and get one back: mean kept ≈ 3·0.1 + 0.9³.
    assert kept[600:].sum(dim=1).mean().item() == pytest.approx(0.3 + 0.729, abs=0.06)
    assert torch.equal(drop.eval()(availability), availability)
    with pytest.raises(ValueError, match="modality_dropout"):
        ModalityDropout(1.0)


# --------------------------------------------------------------------------- every strategy
@pytest.mark.parametrize("fusion,kw", [
    ("single", {"use_modalities": ["pet_amyloid"]}),
    ("early", {}),
    ("early", {"tabular_features": 5}),
    ("intermediate", {"fusion_head": "concat", "tabular_features": 5}),
    ("intermediate", {"fusion_head": "gated"}),
    ("intermediate", {"fusion_head": "attention", "tabular_features": 5}),
    ("late", {"tabular_features": 5}),
    ("late", {"late_combine": "logit"}),
    ("tabular", {"tabular_features": 5}),
])
def test_every_strategy_predicts_and_trains_all_branches(fusion, kw):
    model = build(fusion, modality_dropout=0.3, **kw).train()
    image, availability, tabular = batch()
    logits = model(image, availability, tabular)
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_single_reads_only_its_modality():
    model = build("single", use_modalities=["pet_amyloid"]).eval()
    image, availability, _ = batch()
    changed = image.clone()
    changed[:, 0] = torch.randn_like(changed[:, 0])  # T1w is not read
    torch.testing.assert_close(model(changed, availability), model(image, availability))


# --------------------------------------------------------------------------- missing modality
@pytest.mark.parametrize("fusion,kw", [
    ("early", {}),
    ("intermediate", {"fusion_head": "concat"}),
    ("intermediate", {"fusion_head": "gated"}),
    ("intermediate", {"fusion_head": "attention"}),
    ("late", {}),
])
def test_missing_modality_is_ignored_with_one_warning(fusion, kw):
    model = build(fusion, tabular_features=5, **kw).eval()
    image, availability, tabular = batch()
    availability[:2, 1] = 0  # first two samples lack PET
    image[:2, 1] = 0  # as the datamodule delivers them
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model(image, availability, tabular)
        garbage = image.clone()
        garbage[:2, 1] = torch.randn_like(garbage[:2, 1]) * 5  # whatever the missing channel holds
        again = model(garbage, availability, tabular)
    torch.testing.assert_close(again, out)  # the missing channel does not reach the output
    assert torch.isfinite(out).all()
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "2 sample(s) lack modality ['pet_amyloid']" in messages[0]
    assert ("zero" in messages[0]) == (fusion == "early")


def test_late_fusion_averages_probabilities_of_available_branches():
    model = build("late").eval()
    assert isinstance(model, LateFusion)
    image, availability, _ = batch()
    availability[0, 0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = model(image, availability).softmax(dim=1)
    probs = [clf(image[:, i:i + 1]).softmax(dim=1) for i, clf in enumerate(model.classifiers)]
    torch.testing.assert_close(fused[0], probs[1][0])  # T1w missing: PET's alone
    torch.testing.assert_close(fused[1:], (probs[0][1:] + probs[1][1:]) / 2)


def test_concat_head_is_m_times_the_mean_of_available_contributions():
    model = build("intermediate", fusion_head="concat").eval()
    assert isinstance(model, IntermediateFusion)
    image, availability, _ = batch()
    availability[0, 1] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(image, availability)
    feats = [enc(image[:, i:i + 1]) for i, enc in enumerate(model.encoders)]
    weight, bias = model.head.weight, model.head.bias
    d = feats[0].shape[1]
    contrib = [f @ weight[:, i * d:(i + 1) * d].T for i, f in enumerate(feats)]
    torch.testing.assert_close(out[0], bias + 2 * contrib[0][0])
    torch.testing.assert_close(out[1:], bias + 2 * (contrib[0][1:] + contrib[1][1:]) / 2)


@pytest.mark.parametrize("fusion,kw", [
    ("intermediate", {"fusion_head": "concat"}), ("intermediate", {"fusion_head": "gated"}),
    ("intermediate", {"fusion_head": "attention"}), ("late", {}), ("early", {}),
])
def test_nothing_available_still_predicts(fusion, kw):
    model = build(fusion, **kw).eval()
    image, availability, _ = batch()
    availability[:] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(image * 0, availability)
    assert torch.isfinite(out).all()
    if fusion == "late":
        torch.testing.assert_close(out.softmax(dim=1), torch.full((4, 3), 1 / 3))


# --------------------------------------------------------------------------- configuration
def test_configuration_errors_are_named():
    with pytest.raises(ValueError, match="fusion='mid'"):
        build("mid")
    with pytest.raises(ValueError, match=r"use_modalities \['FLAIR'\]"):
        build("early", use_modalities=["FLAIR"])
    with pytest.raises(ValueError, match="reads one modality"):
        build("single")
    with pytest.raises(ValueError, match="only \\['T1w'\\] and no tabular"):
        build("intermediate", use_modalities=["T1w"])
    with pytest.raises(ValueError, match="needs tabular features"):
        build("tabular")
    with pytest.raises(ValueError, match="fusion_head"):
        build("intermediate", fusion_head="sum")
    with pytest.raises(ValueError, match="not a classification model"):
        build("early", backbone="unet", backbone_kwargs={})
    model = build("early", tabular_features=5)
    image, availability, tabular = batch()
    with pytest.raises(ValueError, match="no 'tabular' entry"):
        model(image, availability)
    with pytest.raises(ValueError, match=r"expected \(B, 5\) features, got \(4, 3\)"):
        model(image, availability, tabular[:, :3])
    with pytest.raises(ValueError, match="channels \\['T1w', 'pet_amyloid'\\]"):
        model(image[:, :1], availability, tabular)


# --------------------------------------------------------------------------- registry
@pytest.mark.parametrize("fusion", ["single", "early", "intermediate", "late"])
def test_registry_builds_the_same_model_as_build_fusion_model(fusion):
    from cogimg import models

    use = ("T1w",) if fusion == "single" else None
    torch.manual_seed(0)
    registered = models.get(f"fusion_{fusion}", backbone="resnet10_3d", modalities=MODALITIES,
                            num_classes=3, input_shape=SHAPE, backbone_kwargs=TINY,
                            use_modalities=use)
    direct = build(fusion, use_modalities=use)
    assert type(registered) is type(direct)
    image, availability, _ = batch()
    registered.eval(), direct.eval()
    with torch.no_grad():
        assert torch.equal(registered(image, availability), direct(image, availability))


def test_registry_lists_fusion_models_and_they_are_not_backbones():
    from cogimg import models

    names = {"fusion_single", "fusion_early", "fusion_intermediate", "fusion_late", "fusion_tabular"}
    assert names == set(models.available("fusion"))
    assert not names & set(models.available("classification"))  # not backbones
    assert isinstance(models.get("fusion_tabular", modalities=MODALITIES, num_classes=3,
                                 tabular_features=5), TabularOnly)
    with pytest.raises(TypeError, match="fusion_head"):
        models.get("fusion_late", backbone="resnet10_3d", modalities=MODALITIES, num_classes=3,
                   input_shape=SHAPE, fusion_head="gated")
    with pytest.raises(ValueError, match="not a classification model"):
        build("early", backbone="fusion_early")
