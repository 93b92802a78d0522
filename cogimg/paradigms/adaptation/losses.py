"""Feature-alignment losses between domains (sites): CORAL and multi-kernel MMD.

Both take features ``(N, D)`` of two domains (a spatial map ``(N, D, *S)`` is averaged over
``S`` first by the caller) and are differentiable in both arguments. :func:`domain_alignment`
extends a two-domain loss to many sites: each site is aligned with all the others pooled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL (Sun & Saenko 2016): ``‖C_s − C_t‖²_F / (4 D²)`` with ``C`` the feature
    covariance (unbiased) of each domain; ``source`` ``(Ns, D)``, ``target`` ``(Nt, D)``, Ns, Nt ≥ 2."""
    _check_pair(source, target, minimum=2, name="coral_loss")
    d = source.shape[1]
    diff = torch.cov(source.T.float()).reshape(d, d) - torch.cov(target.T.float()).reshape(d, d)
    return (diff * diff).sum() / (4.0 * d * d)


def mmd_loss(source: torch.Tensor, target: torch.Tensor, bandwidth: float | None = None,
             multipliers: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
             unbiased: bool = True) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels (Long et al. 2015, DAN).

    ``k(x, y) = Σ_m exp(−‖x − y‖² / (m · σ²))`` over ``multipliers`` m; ``σ²`` = ``bandwidth``
    or, when ``None``, the mean squared distance between all pooled samples (detached, so the
    bandwidth is not optimised). ``unbiased`` (default): the U-statistic of Gretton et al.
    (2012), which leaves out the ``k(x, x)`` terms (Ns, Nt ≥ 2; it can be slightly negative);
    otherwise the biased V-statistic (≥ 0). The V-statistic's diagonal adds
    ``(1/Ns + 1/Nt)·(k(x, x) − mean within-domain k)``, which a network lowers by pulling each
    domain's samples together: with a few pooled vectors per site in a batch, that collapses
    the class information (studies/leave_site_out.yaml).
    """
    _check_pair(source, target, minimum=2 if unbiased else 1, name="mmd_loss")
    x = torch.cat([source, target]).float()
    sq = torch.cdist(x, x).pow(2)
    if bandwidth is None:
        n = x.shape[0]
        sigma2 = sq.detach().sum() / max(n * n - n, 1)
        sigma2 = sigma2.clamp_min(1e-8)
    else:
        if bandwidth <= 0:
            raise ValueError(f"mmd_loss bandwidth must be > 0, got {bandwidth}")
        sigma2 = torch.tensor(float(bandwidth), device=x.device)
    kernel = sum(torch.exp(-sq / (m * sigma2)) for m in multipliers)
    ns = source.shape[0]
    k_ss, k_tt, k_st = kernel[:ns, :ns], kernel[ns:, ns:], kernel[:ns, ns:]
    if not unbiased:
        return k_ss.mean() + k_tt.mean() - 2.0 * k_st.mean()
    nt = k_tt.shape[0]
    within = ((k_ss.sum() - k_ss.diagonal().sum()) / (ns * (ns - 1))
              + (k_tt.sum() - k_tt.diagonal().sum()) / (nt * (nt - 1)))
    return within - 2.0 * k_st.mean()


def domain_alignment(features: torch.Tensor, domains: torch.Tensor,
                     loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     minimum: int = 2) -> torch.Tensor:
    """Mean over domains ``d`` of ``loss(features[d], features[not d])``.

    ``features`` ``(N, D)``, ``domains`` ``(N,)`` integer site indices. Domains with fewer
    than ``minimum`` samples in the batch (or whose complement has fewer) are skipped; a
    batch of one domain gives 0 (there is nothing to align).
    """
    if features.ndim != 2 or domains.shape != features.shape[:1]:
        raise ValueError(f"domain_alignment: features (N, D) and domains (N,), got "
                         f"{tuple(features.shape)} and {tuple(domains.shape)}")
    present = torch.unique(domains)
    # Two domains: "d vs rest" is the same pair both ways, so one term suffices.
    candidates = present[:1] if present.numel() == 2 else present
    terms = []
    for d in candidates:
        inside = domains == d
        if int(inside.sum()) >= minimum and int((~inside).sum()) >= minimum:
            terms.append(loss(features[inside], features[~inside]))
    if not terms:
        return features.sum() * 0.0  # keeps the graph (and DDP) happy
    return torch.stack(terms).mean()


def _check_pair(source: torch.Tensor, target: torch.Tensor, minimum: int, name: str) -> None:
    if source.ndim != 2 or target.ndim != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"{name}: source and target must be (N, D) with the same D, got "
                         f"{tuple(source.shape)} and {tuple(target.shape)}")
    if source.shape[0] < minimum or target.shape[0] < minimum:
        raise ValueError(f"{name} needs ≥ {minimum} samples per domain, got "
                         f"{source.shape[0]} and {target.shape[0]}")
