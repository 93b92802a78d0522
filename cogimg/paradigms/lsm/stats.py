"""Voxel-wise lesion–symptom statistics with permutation FWE control.

**GLM** (``stat="glm"``): every voxel ``v`` fits ``y = X β + γ_v l_v + ε``: ``y`` the score
``(N,)``, ``X`` an intercept plus covariates ``(N, q)`` (e.g. lesion volume in mL), ``l_v``
``(N,)`` 1 where subject ``n`` is lesioned at ``v``; the statistic is the t of ``γ_v``
(``df = N − q − 1``). Without covariates this **is** the pooled-variance two-sample t-test of
lesioned vs spared subjects (``scipy.stats.ttest_ind``, tested). It is computed by
``nilearn.mass_univariate.permuted_ols`` with the score as the tested variable and the
lesion columns as targets: the partial correlation of ``y`` and ``l_v`` given ``X`` is
symmetric, so the t equals that of the model above. Its FWE control is nilearn's
Freedman–Lane max-t permutation (the covariate-residualised score is permuted; the maximum
t over voxels of each permutation builds the null distribution, ``p_FWE(v) = (1 + #{max* ≥
t_v}) / (1 + n_perm)``; Winkler et al. 2014, NeuroImage 92).

**Brunner–Munzel** (``stat="brunner-munzel"``, rank-based, which nilearn lacks): the same
max-statistic scheme here, permuting the scores with ``np.random.default_rng(seed)``.

Voxels lesioned in fewer than ``min_count`` subjects (or spared in fewer) are left out
before testing: too few lesions give no power and inflate the multiple-comparison burden.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from nilearn.mass_univariate import permuted_ols

TAILS = ("greater", "less", "two-sided")


@dataclass
class LesionMatrix:
    """Subjects × tested voxels.

    Attributes:
        values: ``(N, V)`` float32 lesion indicators of the tested voxels.
        voxel_mask: ``(X, Y, Z)`` bool, True where a voxel is tested (``V`` of them).
        lesion_count: ``(X, Y, Z)`` int32 subjects lesioned at each voxel (all voxels).
        min_count: the threshold used.
    """

    values: np.ndarray
    voxel_mask: np.ndarray
    lesion_count: np.ndarray
    min_count: int

    def to_volume(self, stat: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """``(V,)`` values → ``(X, Y, Z)`` float32 volume (``fill`` outside the mask)."""
        volume = np.full(self.voxel_mask.shape, fill, dtype=np.float32)
        volume[self.voxel_mask] = stat
        return volume


def lesion_matrix(maps: np.ndarray, min_count: int | None = None) -> LesionMatrix:
    """Keep the voxels lesioned in ≥ ``min_count`` and spared in ≥ ``min_count`` subjects.

    Args:
        maps: ``(N, X, Y, Z)`` bool lesion maps.
        min_count: default ``max(2, ⌈5 % of N⌉)`` (a common LSM choice).
    """
    maps = np.asarray(maps)
    if maps.ndim != 4 or maps.dtype != bool:
        raise ValueError(f"maps must be (N, X, Y, Z) bool, got {maps.dtype} {maps.shape}")
    n = maps.shape[0]
    min_count = max(2, int(np.ceil(0.05 * n))) if min_count is None else int(min_count)
    count = maps.sum(axis=0, dtype=np.int32)
    keep = (count >= min_count) & (n - count >= min_count)
    if not keep.any():
        raise ValueError(f"no voxel is lesioned in ≥ {min_count} (and spared in ≥ {min_count}) "
                         f"of {n} subjects; lower min_count")
    return LesionMatrix(maps[:, keep].astype(np.float32), keep, count, min_count)


def _confounds(n: int, covariates: np.ndarray | None) -> np.ndarray | None:
    """``(N, C)`` float64 covariates without constant columns (nilearn adds the intercept and
    would take a constant column for one), or ``None``."""
    if covariates is None:
        return None
    c = np.asarray(covariates, dtype=np.float64).reshape(n, -1)
    if not np.all(np.isfinite(c)):
        raise ValueError("covariates must be finite")
    c = c[:, np.ptp(c, axis=0) > 0]
    return c if c.shape[1] else None


def _informative(lesions: np.ndarray, confounds: np.ndarray | None) -> np.ndarray:
    """``(V,)`` bool: the lesion column keeps variance once intercept and covariates are
    regressed out (a column they explain carries no information: t = 0, p = 1)."""
    design = np.ones((lesions.shape[0], 1)) if confounds is None else \
        np.column_stack([np.ones(lesions.shape[0]), confounds])
    residual = lesions - design @ np.linalg.lstsq(design, lesions, rcond=None)[0]
    return (residual**2).sum(axis=0) > 1e-9 * np.maximum((lesions**2).sum(axis=0), 1.0)


def _glm_inputs(lesions: np.ndarray, scores: np.ndarray, covariates: np.ndarray | None):
    lesions = np.asarray(lesions, dtype=np.float64)
    n = lesions.shape[0]
    confounds = _confounds(n, covariates)
    df = n - 1 - (0 if confounds is None else confounds.shape[1]) - 1
    if df < 1:
        raise ValueError(f"{n} subjects leave no degrees of freedom for the intercept, "
                         "the covariates and the lesion term")
    if np.ptp(scores) == 0:
        raise ValueError("scores are constant: there is nothing to map")
    return lesions, confounds, _informative(lesions, confounds)


def _permuted_ols(scores: np.ndarray, lesions: np.ndarray, confounds: np.ndarray | None,
                  n_perm: int, two_sided: bool, seed: int) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():  # n_perm = 1 with one job: a harmless nilearn warning
        warnings.filterwarnings("ignore", message="The specified number of permutations")
        return permuted_ols(scores[:, None], lesions, confounding_vars=confounds,
                            model_intercept=True, n_perm=n_perm, two_sided_test=two_sided,
                            random_state=seed, n_jobs=1, verbose=0)


def glm_t(lesions: np.ndarray, scores: np.ndarray, covariates: np.ndarray | None = None) -> np.ndarray:
    """Voxel-wise t ``(V,)`` of the lesion term (``nilearn`` ``permuted_ols``, no permutation).

    Args:
        lesions: ``(N, V)`` lesion indicators.
        scores: ``(N,)`` behavioural score.
        covariates: ``(N,)`` or ``(N, C)`` nuisance regressors (intercept added); ``None`` =
            pooled-variance two-sample t-test. Positive t: higher scores in lesioned subjects.
    """
    scores = np.asarray(scores, dtype=np.float64)
    lesions, confounds, informative = _glm_inputs(lesions, scores, covariates)
    t = np.zeros(lesions.shape[1])
    t[informative] = _permuted_ols(scores, lesions[:, informative], confounds, 0, True, 0)["t"][0]
    return t


class VoxelBrunnerMunzel:
    """Voxel-wise Brunner–Munzel statistic (rank-based, unequal variances), vectorised.

    Mid-ranks within a group come from one product: with ``C[k, j] = [y_j < y_k] + ½[y_j = y_k]``,
    subject ``k``'s global mid-rank is ``(C 1)_k + ½`` and its rank among the lesioned
    subjects of voxel ``v`` is ``(C l_v)_k + ½``, so ``C L`` ``(N, V)`` gives every voxel's
    within-group ranks. Positive values mean higher scores in lesioned subjects (the sign of
    ``scipy.stats.brunnermunzel(spared, lesioned)``, which it equals — tested). Each score
    vector costs an ``N² V`` product: permutations are ~N times dearer than the GLM's.
    """

    def __init__(self, lesions: np.ndarray) -> None:
        self.lesions = np.asarray(lesions, dtype=np.float32)
        self.n1 = self.lesions.sum(axis=0, dtype=np.float64)
        self.n0 = self.lesions.shape[0] - self.n1
        if (self.n1 < 2).any() or (self.n0 < 2).any():
            raise ValueError("Brunner–Munzel needs ≥ 2 lesioned and ≥ 2 spared subjects per voxel")

    def t(self, scores: np.ndarray) -> np.ndarray:
        """Statistic ``(V, B)`` for scores ``(N, B)``."""
        out = np.empty((self.lesions.shape[1], scores.shape[1]), dtype=np.float32)
        lesion = self.lesions.astype(np.float64)
        spared = 1.0 - lesion
        for b in range(scores.shape[1]):
            y = scores[:, b]
            c = (y[None, :] < y[:, None]) + 0.5 * (y[None, :] == y[:, None])
            rank = c.sum(axis=1) + 0.5                            # (N,) global mid-ranks
            cl = c @ lesion                                       # (N, V)
            d1 = c.sum(axis=1)[:, None] - cl                      # R − R¹ for lesioned rows
            d0 = cl                                               # R − R⁰ for spared rows
            s1 = self._variance(d1, lesion, self.n1)
            s0 = self._variance(d0, spared, self.n0)
            mean1 = rank @ lesion / self.n1
            mean0 = rank @ spared / self.n0
            n = self.n0 + self.n1
            denom = n * np.sqrt(self.n0 * s0 + self.n1 * s1)
            stat = self.n0 * self.n1 * (mean1 - mean0) / np.where(denom > 0, denom, np.inf)
            out[:, b] = stat
        return out

    @staticmethod
    def _variance(d: np.ndarray, member: np.ndarray, n: np.ndarray) -> np.ndarray:
        total = (d * member).sum(axis=0)
        squares = (d * d * member).sum(axis=0)
        return (squares - total**2 / n) / (n - 1)


@dataclass
class LSMResult:
    """Statistic ``t`` ``(V,)``, ``p_fwe`` ``(V,)``, the permutation maxima ``(n_perm,)`` and
    the FWE threshold on the (tail-adjusted) statistic at ``alpha``."""

    t: np.ndarray
    p_fwe: np.ndarray
    null_max: np.ndarray
    threshold: float
    alpha: float
    tail: str

    @property
    def significant(self) -> np.ndarray:
        return self.p_fwe <= self.alpha


def _tailed(t: np.ndarray, tail: str) -> np.ndarray:
    return t if tail == "greater" else -t if tail == "less" else np.abs(t)


def permutation_lsm(lesions: np.ndarray, scores: np.ndarray, covariates: np.ndarray | None = None,
                    n_perm: int = 1000, alpha: float = 0.05, tail: str = "two-sided",
                    seed: int = 0, batch: int = 100, stat: str = "glm") -> LSMResult:
    """Voxel-wise GLM t map with max-statistic permutation FWE-corrected p-values.

    Args:
        lesions: ``(N, V)`` lesion indicators (:attr:`LesionMatrix.values`).
        scores: ``(N,)`` behavioural score (e.g. NIHSS; higher = worse).
        covariates: nuisance regressors (e.g. lesion volume in mL), or ``None`` (t-test).
        n_perm: permutations; tail: ``greater`` (lesion ↔ higher score), ``less``,
            ``two-sided``; batch: Brunner–Munzel permutations scored per step (memory ∝
            V · batch; the GLM runs nilearn's loop).
        seed: seeds the permutations (nilearn's ``random_state`` for the GLM).
        stat: ``glm`` (t-test / regression via nilearn ``permuted_ols``) or ``brunner-munzel``
            (:class:`VoxelBrunnerMunzel`; no covariates).
    """
    if stat not in ("glm", "brunner-munzel"):
        raise ValueError(f"stat={stat!r}; choose 'glm' or 'brunner-munzel'")
    if stat == "brunner-munzel" and covariates is not None:
        raise ValueError("Brunner–Munzel takes no covariates; use stat='glm' for a "
                         "lesion-volume-adjusted map")
    if tail not in TAILS:
        raise ValueError(f"tail={tail!r}; choose one of {list(TAILS)}")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or scores.shape[0] != np.shape(lesions)[0]:
        raise ValueError(f"scores {scores.shape} must be (N,) for lesions {np.shape(lesions)}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores must be finite")
    if n_perm < 1:
        raise ValueError(f"n_perm must be ≥ 1, got {n_perm}")
    if stat == "glm":
        t, p_fwe, null_max = _glm_lsm(lesions, scores, covariates, n_perm, tail, seed)
    else:
        t, p_fwe, null_max = _brunner_munzel_lsm(lesions, scores, n_perm, tail, seed, batch)
    threshold = float(np.quantile(null_max, 1 - alpha))
    return LSMResult(t.astype(np.float32), p_fwe, null_max, threshold, alpha, tail)


def _glm_lsm(lesions, scores, covariates, n_perm: int, tail: str, seed: int):
    """GLM t ``(V,)``, FWE p ``(V,)`` and permutation maxima ``(n_perm,)`` from nilearn.

    nilearn tests ``two-sided`` or ``greater``; ``less`` is ``greater`` on the negated score.
    """
    lesions, confounds, informative = _glm_inputs(lesions, scores, covariates)
    sign = -1.0 if tail == "less" else 1.0
    out = _permuted_ols(sign * scores, lesions[:, informative], confounds, n_perm,
                        tail == "two-sided", seed)
    t = np.zeros(lesions.shape[1])
    t[informative] = sign * out["t"][0]
    p_fwe = np.ones(lesions.shape[1])
    p_fwe[informative] = 10.0 ** -out["logp_max_t"][0]
    return t, p_fwe, out["h0_max_t"][0]


def _brunner_munzel_lsm(lesions, scores, n_perm: int, tail: str, seed: int, batch: int):
    """Brunner–Munzel statistic ``(V,)``, FWE p ``(V,)`` and permutation maxima ``(n_perm,)``."""
    bm = VoxelBrunnerMunzel(lesions)
    t = bm.t(scores[:, None])[:, 0]
    rng = np.random.default_rng(seed)
    null_max = np.empty(n_perm)
    for start in range(0, n_perm, batch):
        size = min(batch, n_perm - start)
        permuted = np.stack([scores[rng.permutation(scores.size)] for _ in range(size)], 1)
        null_max[start:start + size] = _tailed(bm.t(permuted), tail).max(axis=0)
    exceed = np.searchsorted(np.sort(null_max), _tailed(t, tail), side="left")
    p_fwe = (1.0 + (n_perm - exceed)) / (n_perm + 1.0)
    return t, p_fwe, null_max
