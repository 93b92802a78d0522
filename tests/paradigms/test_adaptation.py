"""Adaptation building blocks: gradient reversal, CORAL/MMD against closed forms, ComBat
against a hand-computed location/scale case (and neuroCombat when installed), AdaBN/TENT."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cogimg.paradigms.adaptation import (
    AdaptationConfig,
    ComBat,
    DomainAdaptation,
    GradientReversal,
    adapt_batchnorm,
    coral_loss,
    dann_coefficient,
    domain_alignment,
    mmd_loss,
    reverse_gradient,
    softmax_entropy,
    tent,
)


# ------------------------------------------------------------------ gradient reversal
def test_reverse_gradient_is_identity_forward_and_flips_gradient_sign():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.5 * w)


def _head(method: str, sites: tuple[str, ...], feature_dim: int, **options) -> DomainAdaptation:
    head = DomainAdaptation(method, sites=list(sites), **options)
    head.build(feature_dim)
    return head


def test_dann_site_loss_flips_encoder_gradients_but_not_site_classifier_gradients():
    torch.manual_seed(0)
    encoder = nn.Linear(5, 8)
    head = _head("dann", ("a", "b"), 8, gamma=0.0)
    x, domains = torch.randn(6, 5), torch.tensor([0, 0, 0, 1, 1, 1])

    def grads(reverse: bool):
        encoder.zero_grad()
        head.zero_grad()
        head.reversal.coeff = 1.0
        feats = encoder(x)
        if reverse:
            loss, _ = head.domain_loss(feats, domains)  # gamma 0: coefficient 1
        else:
            loss = nn.functional.cross_entropy(head.site_classifier(nn.functional.layer_norm(feats, (8,))), domains)
        loss.backward()
        return encoder.weight.grad.clone(), head.site_classifier[0].weight.grad.clone()

    enc_rev, clf_rev = grads(True)
    enc_plain, clf_plain = grads(False)
    assert enc_plain.abs().sum() > 0
    assert torch.allclose(enc_rev, -enc_plain, atol=1e-7)
    assert torch.allclose(clf_rev, clf_plain, atol=1e-7)


def test_dann_site_loss_cannot_be_raised_by_scaling_the_features():
    """The reversed gradient maximises the site loss; on raw features an encoder can do that
    without bound by inflating them (seen on the stroke U-Net: site loss ~1e7, Dice collapsed)."""
    torch.manual_seed(0)
    head = _head("dann", ("a", "b", "c"), 8, gamma=0.0)
    feats, domains = torch.randn(6, 8), torch.tensor([0, 0, 1, 1, 2, 2])
    loss, _ = head.domain_loss(feats, domains)
    for scale in (0.5, 1e3):
        assert torch.allclose(head.domain_loss(scale * feats, domains)[0], loss, rtol=1e-4)
    assert loss < 3 * math.log(3)  # bounded by the classifier, not by the features


def test_dann_coefficient_schedule():
    assert dann_coefficient(0.0) == 0.0
    assert dann_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert dann_coefficient(0.5, gamma=10) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    with pytest.raises(ValueError, match="≥ 0"):
        GradientReversal(-1.0)


# ------------------------------------------------------------------ alignment losses
def test_coral_loss_closed_form():
    # 1-D covariances: var([0, 2]) = 2, var([0, 4]) = 8 -> (2 - 8)^2 / (4 * 1^2) = 9
    assert float(coral_loss(torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [4.0]]))) == pytest.approx(9.0)
    x = torch.randn(10, 4)
    assert float(coral_loss(x, x + 3.0)) == pytest.approx(0.0, abs=1e-6)  # shift-invariant


def test_mmd_loss_closed_form_and_zero_for_identical_sets():
    a, b = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    v = mmd_loss(a, b, bandwidth=1.0, multipliers=(1.0,), unbiased=False)
    assert float(v) == pytest.approx(2 - 2 * math.exp(-1))
    with pytest.raises(ValueError, match="≥ 2 samples"):
        mmd_loss(a, b)
    # U-statistic by hand, k(x, y) = exp(−(x − y)²): source {0, 1}, target {0, 3}
    u = mmd_loss(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [3.0]]), bandwidth=1.0, multipliers=(1.0,))
    e = math.exp
    assert float(u) == pytest.approx(e(-1) + e(-9) - 2 * (1 + e(-9) + e(-1) + e(-4)) / 4)
    x = torch.randn(8, 3)
    assert float(mmd_loss(x, x.clone(), unbiased=False)) == pytest.approx(0.0, abs=1e-6)
    assert float(mmd_loss(x, x + 2.0)) > 0.1


def test_unbiased_mmd_does_not_reward_pulling_each_domain_together():
    """Two sites drawn from the same N(0, s² I₄), four samples each, k(x, y) = exp(−‖x − y‖²/4):
    E[V-statistic] = (1/4 + 1/4)·(1 − E k) with E k = (1 + s²)⁻², which falls as the spread s
    shrinks although the sites never differ; the U-statistic's expectation is 0 at every s."""
    generator = torch.Generator().manual_seed(0)
    for spread in (1.0, 0.3):
        draws = [spread * torch.randn(8, 4, generator=generator) for _ in range(4000)]
        v = torch.stack([mmd_loss(x[:4], x[4:], bandwidth=4.0, multipliers=(1.0,), unbiased=False) for x in draws])
        u = torch.stack([mmd_loss(x[:4], x[4:], bandwidth=4.0, multipliers=(1.0,)) for x in draws])
        assert float(v.mean()) == pytest.approx(0.5 * (1 - (1 + spread**2) ** -2), abs=0.01)
        assert float(u.mean()) == pytest.approx(0.0, abs=0.01)


def test_domain_alignment_averages_each_site_against_the_rest():
    feats = torch.randn(9, 2)
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected = torch.stack([coral_loss(feats[domains == d], feats[domains != d]) for d in range(3)]).mean()
    assert torch.allclose(domain_alignment(feats, domains, coral_loss), expected)
    # two sites: one term; one site: nothing to align (zero, still differentiable)
    two = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1])
    assert torch.allclose(domain_alignment(feats, two, coral_loss),
                          coral_loss(feats[two == 0], feats[two == 1]))
    feats.requires_grad_(True)
    zero = domain_alignment(feats, torch.zeros(9, dtype=torch.long), coral_loss)
    assert float(zero.detach()) == 0.0 and zero.requires_grad
    with pytest.raises(ValueError, match="same D"):
        coral_loss(torch.randn(3, 2), torch.randn(3, 4))


@pytest.mark.parametrize("method", ["coral", "mmd"])
def test_alignment_compares_every_position_of_a_map_layer_normalised(method):
    """A segmentation bottleneck ``(N, D, *S)``: each of the N·|S| positions is a sample, so
    two patches per domain give 2·|S| vectors, not two; shrinking them cannot lower the loss
    (CORAL's loss fell 600-fold that way on the stroke U-Net, pooled and unnormalised)."""
    torch.manual_seed(0)
    head = _head(method, ("a", "b"), 6)
    maps, domains = torch.randn(4, 6, 2, 3, 1), torch.tensor([0, 0, 1, 1])
    # by hand: position (n, x, y, z) -> row, with sample n's domain
    rows = maps.permute(0, 2, 3, 4, 1).reshape(24, 6)
    rows = (rows - rows.mean(1, keepdim=True)) / torch.sqrt(rows.var(1, unbiased=False, keepdim=True) + 1e-8)
    fn = coral_loss if method == "coral" else mmd_loss
    expected = fn(rows[:12], rows[12:])
    loss, _ = head.domain_loss(maps, domains)
    assert torch.allclose(loss, expected, rtol=1e-5, atol=1e-6)
    for scale in (1e-2, 1e2):
        assert torch.allclose(head.domain_loss(scale * maps, domains)[0], loss, rtol=1e-3, atol=1e-5)


def test_adaptation_config_rejects_bad_options():
    with pytest.raises(ValueError, match="method"):
        AdaptationConfig.from_dict({"method": "dan"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['wieght'\]"):
        AdaptationConfig.from_dict({"method": "dann", "wieght": 1})
    with pytest.raises(ValueError, match="weight"):
        AdaptationConfig.from_dict({"method": "mmd", "weight": -1})


# ------------------------------------------------------------------ ComBat
def test_combat_location_scale_matches_hand_computation():
    # Site A [1, 2, 3], site B [10, 14, 18]: alpha = 8, sigma^2 = (1+0+1+16+0+16)/6, and
    # both sites map to [8 - sigma, 8, 8 + sigma] (see the derivation in combat.py's model).
    y = np.array([[1.0], [2.0], [3.0], [10.0], [14.0], [18.0]])
    sites = ["A"] * 3 + ["B"] * 3
    out = ComBat(empirical_bayes=False).fit_transform(y, sites)
    sigma = math.sqrt(34 / 6)
    expected = np.array([8 - sigma, 8, 8 + sigma] * 2)[:, None]
    np.testing.assert_allclose(out, expected, atol=1e-10)


def test_combat_preserves_covariate_effect_and_removes_site_effect():
    rng = np.random.default_rng(0)
    n, g = 120, 6
    sites = np.array(["s1", "s2", "s3"] * (n // 3))
    age = rng.uniform(60, 85, n)
    shift = {"s1": 0.0, "s2": 3.0, "s3": -2.0}
    scale = {"s1": 1.0, "s2": 2.0, "s3": 0.5}
    y = np.stack([0.2 * a + scale[s] * rng.normal(0, 1, g) + shift[s] for a, s in zip(age, sites)])
    out = ComBat().fit_transform(y, sites, age[:, None])
    site_means = [out[sites == s].mean() - 0.2 * age[sites == s].mean() for s in ("s1", "s2", "s3")]
    assert np.ptp(site_means) < 0.3  # raw: 5
    slope = np.polyfit(age, out.mean(axis=1), 1)[0]
    assert slope == pytest.approx(0.2, abs=0.03)
    sds = [out[sites == s].std() for s in ("s1", "s2", "s3")]
    assert max(sds) / min(sds) < 1.3  # raw: 4


def test_combat_empirical_bayes_shrinks_towards_the_prior():
    rng = np.random.default_rng(1)
    y = rng.normal(0, 1, (20, 30)) + np.repeat([[0.0], [1.0]], 10, axis=0)
    sites = ["a"] * 10 + ["b"] * 10
    ls, eb = ComBat(empirical_bayes=False).fit(y, sites), ComBat().fit(y, sites)
    for s in ("a", "b"):
        gamma_bar = ls.gamma_[s].mean()
        # posterior mean lies between the per-feature estimate and the prior mean
        assert np.all(np.abs(eb.gamma_[s] - gamma_bar) <= np.abs(ls.gamma_[s] - gamma_bar) + 1e-9)


def test_combat_new_site_and_errors():
    rng = np.random.default_rng(2)
    y = rng.normal(0, 1, (30, 4))
    sites = ["a", "b", "c"] * 10
    model = ComBat().fit(y, sites)
    new = rng.normal(5, 3, (12, 4))
    with pytest.raises(ValueError, match=r"site\(s\) \['d'\] were not fitted"):
        model.transform(new, ["d"] * 12)
    out = model.fit_site("d", new).transform(new, ["d"] * 12)
    assert abs(out.mean()) < 0.5 and 0.6 < out.std() < 1.5
    with pytest.raises(ValueError, match="NaN"):
        ComBat().fit(np.full((6, 2), np.nan), ["a", "b"] * 3)
    with pytest.raises(ValueError, match="≥ 2 training sites"):
        ComBat().fit(y, ["a"] * 30)
    with pytest.raises(RuntimeError, match="not fitted"):
        ComBat().transform(y, sites)


def test_combat_matches_neurocombat():
    neuro = pytest.importorskip("neuroCombat")
    import pandas as pd

    rng = np.random.default_rng(3)
    n, g = 60, 8
    sites = np.array(["1", "2", "3"] * (n // 3))
    age = rng.uniform(60, 85, n)
    y = 0.1 * age[:, None] + rng.normal(0, 1, (n, g)) * np.where(sites == "2", 2.0, 1.0)[:, None] \
        + np.where(sites == "3", 1.5, 0.0)[:, None]
    covars = pd.DataFrame({"batch": sites.astype(int), "age": age})
    ref = neuro.neuroCombat(dat=y.T, covars=covars, batch_col="batch", continuous_cols=["age"])["data"].T
    ours = ComBat().fit_transform(y, sites, age[:, None])
    np.testing.assert_allclose(ours, ref, atol=1e-3)


# ------------------------------------------------------------------ test-time adaptation
def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def _forward(model, batch):
    return model(batch)


def test_adapt_batchnorm_sets_running_stats_to_target_statistics():
    model = _bn_model().eval()
    target = [torch.randn(8, 3) + 5.0, torch.randn(8, 3) + 5.0]
    adapted = adapt_batchnorm(model, target, _forward)
    hidden = [model[0](t).detach() for t in target]
    bn = adapted[1]
    # momentum=None: the running values are the plain average of the per-batch statistics
    assert torch.allclose(bn.running_mean, torch.stack([h.mean(dim=0) for h in hidden]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([h.var(dim=0) for h in hidden]).mean(0), atol=1e-5)
    assert torch.allclose(model[1].running_mean, torch.zeros(4))  # the source model is untouched
    assert not adapted.training


def test_tent_lowers_entropy_and_updates_only_batchnorm_affine():
    model = _bn_model().eval()
    target = [torch.randn(16, 3) * 2 + 1.0 for _ in range(2)]
    adapted = tent(model, target, _forward, lr=0.05, steps=10)
    with torch.no_grad():
        before = float(softmax_entropy(model(target[0])))
        after = float(softmax_entropy(adapted(target[0])))
    assert after < before
    assert torch.equal(adapted[0].weight, model[0].weight) and torch.equal(adapted[3].weight, model[3].weight)
    assert not torch.equal(adapted[1].weight, model[1].weight)
    with pytest.raises(ValueError, match="has none"):
        tent(nn.Linear(3, 2), target, _forward)
