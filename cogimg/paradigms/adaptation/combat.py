"""ComBat harmonisation of tabular / regional features across sites (Johnson, Li & Rabinovic
2007; Fortin et al. 2017/2018 for neuroimaging), fitted on training sites only.

Model, per feature ``g``, subject ``j`` of site ``i``::

    y_ijg = α_g + x_ij β_g + γ_ig + δ_ig ε_ijg,     ε ~ N(0, σ_g²)

``α`` (grand mean), ``β`` (biological covariates to *preserve*, e.g. age, sex, diagnosis)
and ``σ`` are fitted by least squares on the training data; the site's additive ``γ`` and
multiplicative ``δ`` effects are estimated on standardised data and, with
``empirical_bayes=True`` (the default, "parametric ComBat"), shrunk towards their across-
feature priors (γ ~ N(γ̄_i, τ̄_i²), δ² ~ InvGamma(λ_i, θ_i), method of moments) by the
published fixed-point iteration. Harmonised data is ``σ (z − γ*) / δ* + α + x β``.

Fitted parameters are frozen: :meth:`ComBat.transform` applies them to new subjects of the
training sites; :meth:`ComBat.fit_site` estimates a *new* site's effects from its own data
against the frozen reference (its covariates must be known — never use labels of a test
site as a covariate). Plain numpy; no per-subject data is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class _SitePrior:
    gamma_bar: float
    tau2: float
    lam: float
    theta: float


class ComBat:
    """Feature-level site harmonisation.

    Args:
        empirical_bayes: shrink site effects towards their across-feature priors (parametric
            ComBat); ``False`` = per-feature location/scale estimates ("L/S" adjustment).
        mean_only: adjust location only (``δ = 1``).
        tol, max_iter: convergence of the empirical-Bayes fixed point (relative change).
    """

    def __init__(self, empirical_bayes: bool = True, mean_only: bool = False,
                 tol: float = 1e-4, max_iter: int = 1000) -> None:
        self.empirical_bayes, self.mean_only = empirical_bayes, mean_only
        self.tol, self.max_iter = tol, max_iter
        self.sites_: list[str] = []

    # ------------------------------------------------------------------ fit
    def fit(self, features: np.ndarray, sites: Sequence[str], covariates: np.ndarray | None = None) -> ComBat:
        """Fit on ``features`` ``(N, G)`` of the training subjects, their ``sites`` ``(N,)`` and
        numeric ``covariates`` ``(N, Q)`` to preserve (one-hot encode categories first)."""
        y, sites, x = self._check(features, sites, covariates, fitting=True)
        names = sorted({str(s) for s in sites})
        if len(names) < 2:
            raise ValueError(f"ComBat needs ≥ 2 training sites, got {names}")
        if small := [s for s in names if (sites == s).sum() < 2]:
            raise ValueError(f"ComBat: site(s) {small} have fewer than 2 subjects")
        n = len(y)
        onehot = (sites[:, None] == np.array(names)[None, :]).astype(float)
        design = np.hstack([onehot, x])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        if np.linalg.matrix_rank(design) < design.shape[1]:
            raise ValueError("ComBat: covariates are collinear with the sites (e.g. a diagnosis "
                             "present at one site only); drop or merge them")
        k = len(names)
        weights = onehot.sum(axis=0) / n
        self.alpha_ = weights @ coef[:k]              # (G,) grand mean
        self.beta_ = coef[k:]                         # (Q, G)
        self.sigma_ = np.sqrt(((y - design @ coef) ** 2).mean(axis=0))  # (G,) pooled SD
        if np.any(self.sigma_ == 0):
            raise ValueError("ComBat: a feature has zero residual variance; remove constant features")
        z = self._standardise(y, x)
        self.sites_, self.gamma_, self.delta2_, self._priors = [], {}, {}, {}
        gamma_hat = np.stack([z[sites == s].mean(axis=0) for s in names])          # (K, G)
        delta2_hat = np.stack([z[sites == s].var(axis=0, ddof=1) for s in names])  # (K, G)
        for i, s in enumerate(names):  # plain str names (np.str_ would leak into messages)
            prior = _prior(gamma_hat[i], delta2_hat[i]) if self.empirical_bayes else None
            self._store(s, z[sites == s], gamma_hat[i], delta2_hat[i], prior)
        return self

    def fit_site(self, name: str, features: np.ndarray, covariates: np.ndarray | None = None) -> ComBat:
        """Estimate a new site's effects from its subjects ``(N, G)`` against the frozen
        reference (α, β, σ of :meth:`fit`), so that :meth:`transform` accepts it."""
        self._require_fit()
        y, _, x = self._check(features, [name] * len(features), covariates, fitting=False)
        if len(y) < 2:
            raise ValueError(f"ComBat.fit_site({name!r}) needs ≥ 2 subjects, got {len(y)}")
        z = self._standardise(y, x)
        gamma_hat, delta2_hat = z.mean(axis=0), z.var(axis=0, ddof=1)
        prior = _prior(gamma_hat, delta2_hat) if self.empirical_bayes else None
        self._store(str(name), z, gamma_hat, delta2_hat, prior)
        return self

    def _store(self, site: str, z: np.ndarray, gamma_hat: np.ndarray, delta2_hat: np.ndarray,
               prior: _SitePrior | None) -> None:
        if self.mean_only:
            delta2_hat = np.ones_like(delta2_hat)
        if self.empirical_bayes:
            gamma, delta2 = self._shrink(z, gamma_hat, delta2_hat, prior)
        else:
            gamma, delta2 = gamma_hat, delta2_hat
        if site not in self.sites_:
            self.sites_.append(site)
        self.gamma_[site], self.delta2_[site], self._priors[site] = gamma, delta2, prior

    def _shrink(self, z, gamma_hat, delta2_hat, p: _SitePrior) -> tuple[np.ndarray, np.ndarray]:
        """Johnson et al.'s iteration for the posterior means γ*, δ*² of one site."""
        n = len(z)
        gamma, delta2 = gamma_hat.copy(), delta2_hat.copy()
        for _ in range(self.max_iter):
            new_gamma = (n * p.tau2 * gamma_hat + delta2 * p.gamma_bar) / (n * p.tau2 + delta2)
            if self.mean_only:
                new_delta2 = np.ones_like(delta2)
            else:
                ssr = ((z - new_gamma) ** 2).sum(axis=0)
                new_delta2 = (p.theta + 0.5 * ssr) / (n / 2.0 + p.lam - 1.0)
            change = max(np.max(np.abs(new_gamma - gamma) / np.maximum(np.abs(gamma), 1e-12)),
                         np.max(np.abs(new_delta2 - delta2) / np.maximum(delta2, 1e-12)))
            gamma, delta2 = new_gamma, new_delta2
            if change < self.tol:
                break
        return gamma, delta2

    # ------------------------------------------------------------------ apply
    def transform(self, features: np.ndarray, sites: Sequence[str],
                  covariates: np.ndarray | None = None) -> np.ndarray:
        """Harmonised ``(N, G)`` features of subjects from fitted sites."""
        self._require_fit()
        y, sites, x = self._check(features, sites, covariates, fitting=False)
        if unknown := sorted({str(s) for s in sites} - set(self.sites_)):
            raise ValueError(f"ComBat: site(s) {unknown} were not fitted (fitted: {self.sites_}); "
                             "estimate a new site with fit_site() first")
        z = self._standardise(y, x)
        out = np.empty_like(z)
        for s in set(sites):
            rows = sites == s
            out[rows] = (z[rows] - self.gamma_[s]) / np.sqrt(self.delta2_[s])
        return out * self.sigma_ + self.alpha_ + x @ self.beta_

    def fit_transform(self, features, sites, covariates=None) -> np.ndarray:
        return self.fit(features, sites, covariates).transform(features, sites, covariates)

    # ------------------------------------------------------------------ helpers
    def _standardise(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (y - self.alpha_ - x @ self.beta_) / self.sigma_

    def _require_fit(self) -> None:
        if not self.sites_:
            raise RuntimeError("ComBat is not fitted; call fit() on the training sites first")

    def _check(self, features, sites, covariates, fitting: bool):
        y = np.asarray(features, dtype=np.float64)
        if y.ndim != 2:
            raise ValueError(f"ComBat: features must be (subjects, features), got shape {y.shape}")
        if not np.all(np.isfinite(y)):
            raise ValueError("ComBat: features contain NaN or inf; impute or drop them first")
        sites = np.asarray([str(s) for s in sites])
        if sites.shape != (len(y),):
            raise ValueError(f"ComBat: {len(sites)} site labels for {len(y)} subjects")
        x = np.zeros((len(y), 0)) if covariates is None else np.asarray(covariates, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if x.shape[0] != len(y) or not np.all(np.isfinite(x)):
            raise ValueError(f"ComBat: covariates must be finite (N={len(y)}, Q), got shape {x.shape}")
        if not fitting and x.shape[1] != self.beta_.shape[0]:
            raise ValueError(f"ComBat: fitted with {self.beta_.shape[0]} covariates, got {x.shape[1]}")
        if not fitting and y.shape[1] != len(self.alpha_):
            raise ValueError(f"ComBat: fitted on {len(self.alpha_)} features, got {y.shape[1]}")
        return y, sites, x


def _prior(gamma_hat: np.ndarray, delta2_hat: np.ndarray) -> _SitePrior:
    """Hyper-parameters of one site's priors, by the method of moments over features."""
    if gamma_hat.size < 2:
        raise ValueError("ComBat's empirical Bayes priors need ≥ 2 features (use empirical_bayes=False)")
    m, s2 = delta2_hat.mean(), delta2_hat.var(ddof=1)
    s2 = max(s2, 1e-12)
    return _SitePrior(gamma_bar=float(gamma_hat.mean()), tau2=float(max(gamma_hat.var(ddof=1), 1e-12)),
                      lam=float((2 * s2 + m**2) / s2), theta=float((m * s2 + m**3) / s2))
