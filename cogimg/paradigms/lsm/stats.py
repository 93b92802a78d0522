"""Vectorised voxel-wise lesion–symptom statistics with permutation FWE control.

Every voxel ``v`` fits the same general linear model ``y = X β + γ_v l_v + ε``: ``y`` the
score ``(N,)``, ``X`` an intercept plus covariates ``(N, q)`` (e.g. lesion volume in mL),
``l_v`` ``(N,)`` 1 where subject ``n`` is lesioned at ``v``. The statistic is the t of ``γ_v``.
Without covariates this **is** the pooled-variance two-sample t-test of lesioned vs spared
subjects (``scipy.stats.ttest_ind``, tested). By Frisch–Waugh–Lovell, with ``M = I − X X⁺``
the residual maker, ``r_v = l_vᵀ M y / (‖M l_v‖ ‖M y‖)`` and ``t_v = r_v √(df / (1 − r_v²))``,
``df = N − q − 1``: one matrix product ``Lᵀ (M y)`` gives every voxel at once, and a batch of
permutations is one ``(V × N) · (N × B)`` product.

**FWE.** Freedman–Lane permutation: the reduced-model residuals ``M y`` are permuted, re-
residualised (``M P M y``) and scored on every voxel; the maximum statistic over voxels of
each permutation builds the null distribution, so ``p_FWE(v) = (1 + #{max* ≥ t_v}) / (1 +
n_perm)`` controls the family-wise error over the map (Winkler et al. 2014, NeuroImage 92).

Voxels lesioned in fewer than ``min_count`` subjects (or spared in fewer) are left out
before testing: too few lesions give no power and inflate the multiple-comparison burden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def _design(n: int, covariates: np.ndarray | None) -> np.ndarray:
    x = np.ones((n, 1))
    if covariates is not None:
        c = np.asarray(covariates, dtype=np.float64).reshape(n, -1)
        if not np.all(np.isfinite(c)):
            raise ValueError("covariates must be finite")
        x = np.concatenate([x, c - c.mean(axis=0)], axis=1)
    return x


class VoxelGLM:
    """Voxel-wise t of the lesion term for many scores (permutations) at once.

    Args:
        lesions: ``(N, V)`` lesion indicators.
        covariates: ``(N,)`` or ``(N, C)`` nuisance regressors (intercept added); ``None`` =
            pooled-variance two-sample t-test.
    """

    def __init__(self, lesions: np.ndarray, covariates: np.ndarray | None = None) -> None:
        self.lesions = np.asarray(lesions, dtype=np.float32)
        n = self.lesions.shape[0]
        self.design = _design(n, covariates)
        self.df = n - self.design.shape[1] - 1
        if self.df < 1:
            raise ValueError(f"{n} subjects leave no degrees of freedom for "
                             f"{self.design.shape[1]} nuisance columns + the lesion term")
        self.pinv = np.linalg.pinv(self.design)                       # (q, N)
        lx = self.lesions.T.astype(np.float64) @ self.design          # (V, q)
        sq = self.lesions.sum(axis=0, dtype=np.float64)                # l·l (binary)
        fitted = np.einsum("vq,qn,nv->v", lx, self.pinv, self.lesions.astype(np.float64))
        norm2 = np.maximum(sq - fitted, 0.0)
        # A lesion column explained by the covariates (norm ≈ 0) carries no information.
        self.valid = norm2 > 1e-9 * np.maximum(sq, 1.0)
        self.lesion_norm = np.sqrt(np.where(self.valid, norm2, 1.0)).astype(np.float32)

    def residualise(self, y: np.ndarray) -> np.ndarray:
        """``M y`` for ``y`` ``(N,)`` or ``(N, B)``."""
        return y - self.design @ (self.pinv @ y)

    def t(self, residuals: np.ndarray) -> np.ndarray:
        """t of the lesion term, ``(V, B)``, for residualised scores ``(N, B)``."""
        r_norm = np.linalg.norm(residuals, axis=0)
        r_norm[r_norm == 0] = np.inf  # a constant score: every correlation is 0
        numerator = self.lesions.T @ residuals.astype(np.float32)     # (V, B)
        r = numerator / self.lesion_norm[:, None] / r_norm[None, :].astype(np.float32)
        r = np.clip(r, -0.999999, 0.999999)
        t = r * np.sqrt(self.df / (1.0 - r * r))
        t[~self.valid] = 0.0
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

    def residualise(self, y: np.ndarray) -> np.ndarray:
        return y  # rank statistic: no nuisance model

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
            ``two-sided``; batch: permutations scored per matrix product (memory ∝ V · batch).
        stat: ``glm`` (t-test / regression, :class:`VoxelGLM`) or ``brunner-munzel``
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
    glm = VoxelGLM(lesions, covariates) if stat == "glm" else VoxelBrunnerMunzel(lesions)
    residuals = glm.residualise(scores)
    t = glm.t(residuals[:, None])[:, 0]
    rng = np.random.default_rng(seed)
    null_max = np.empty(n_perm)
    for start in range(0, n_perm, batch):
        size = min(batch, n_perm - start)
        permuted = np.stack([residuals[rng.permutation(residuals.size)] for _ in range(size)], 1)
        null_max[start:start + size] = _tailed(glm.t(glm.residualise(permuted)), tail).max(axis=0)
    observed = _tailed(t, tail)
    exceed = np.searchsorted(np.sort(null_max), observed, side="left")
    p_fwe = (1.0 + (n_perm - exceed)) / (n_perm + 1.0)
    threshold = float(np.quantile(null_max, 1 - alpha))
    return LSMResult(t.astype(np.float32), p_fwe, null_max, threshold, alpha, tail)
