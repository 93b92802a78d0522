"""Classical (scikit-learn) outcome regressors on tabular features + lesion-map voxels.

:func:`build_classical` returns an unfitted estimator ``fit(X, y)`` / ``predict(X)``. Every
step that learns from data (scaling, column filters, PCA, hyperparameter search by inner
CV) sits inside the estimator, so cross-validation fits it on training folds only.

Models (``name``):

* ``soop_svr`` — the SOOP demo's reference model, reproduced (neurolabusc/
  StrokeOutcomeOptimizationProjectDemo ``Scripts/deep_learn.py``): keep the columns that are
  non-zero in more than 10 % of the (training) rows, standardise, ``SVR(kernel="rbf")`` with
  scikit-learn's defaults (C = 1, γ = "scale", ε = 0.1) on the raw score. The demo fits its
  scaler on all rows and reports leave-one-out; here both sit inside the folds.
* ``svr`` — RBF SVR, C/γ tuned by inner 3-fold CV, on √score.
* ``kernel_ridge`` — RBF kernel ridge, α/γ tuned by inner 3-fold CV, on √score.
* ``ridge`` — ridge on tabular + map voxels (α by efficient LOO CV).
* ``gbm`` — histogram gradient boosting, Poisson loss (a log link for a count-like score),
  optional monotonic constraints by feature name.
* ``ensemble`` — mean of ``members`` (default svr, ridge, gbm).
* ``stack`` — ``members`` combined by non-negative least squares on their inner 5-fold
  out-of-fold predictions (scikit-learn ``StackingRegressor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

CLASSICAL = ("soop_svr", "svr", "kernel_ridge", "ridge", "gbm", "ensemble", "stack")
_DEFAULT_MEMBERS = ("svr", "ridge", "gbm")
_OWN = {"C_grid", "gamma_grid", "alphas", "alpha_grid", "members", "map_components",
        "monotonic", "min_nonzero_fraction"}


class NonzeroColumns(BaseEstimator, TransformerMixin):
    """Keep the columns non-zero in more than ``min_fraction`` of the rows seen by ``fit``
    (the SOOP demo's ``(data != 0).sum() > 0.1 * n`` filter)."""

    def __init__(self, min_fraction: float = 0.1) -> None:
        self.min_fraction = min_fraction

    def fit(self, x, y=None):
        x = np.asarray(x)
        self.keep_ = np.count_nonzero(x, axis=0) > self.min_fraction * x.shape[0]
        return self

    def transform(self, x):
        return np.asarray(x)[:, self.keep_]


def build_classical(name: str, n_tabular: int | None = None, sqrt_target: bool | None = None,
                    seed: int = 0, feature_names: Sequence[str] | None = None, **params: Any):
    """A scikit-learn regressor for ``X`` = tabular columns then (optionally) map voxels.

    Args:
        name: one of :data:`CLASSICAL`.
        n_tabular: how many leading columns of ``X`` are tabular features (the rest are
            lesion-map voxels); ``None`` = all. SVR, kernel ridge and boosting read the
            tabular columns (standardised) plus, with ``map_components`` = k, the map's first
            k principal components (PCA fitted in-fold); ridge reads every column (map voxels
            as fractions, all-zero voxels of the training fold dropped).
        sqrt_target: learn √y and predict its square (y ≥ 0, e.g. NIHSS); default: on for
            SVR and kernel ridge, off for ridge (its map voxels fit y better linearly) and for
            the reference (the demo fits the raw score).
        seed: seed of the inner CV folds, PCA and boosting.
        feature_names: names of the tabular columns (for ``monotonic``).
        params: ``svr``: ``C_grid``, ``gamma_grid``; ``kernel_ridge``: ``alpha_grid``,
            ``gamma_grid``; ``ridge``: ``alphas``; ``gbm``: ``monotonic`` ({feature name:
            +1/−1}) and ``HistGradientBoostingRegressor`` arguments; ``ensemble``/``stack``:
            ``members``; any: ``map_components``; ``soop_svr``: ``min_nonzero_fraction``.
    """
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.decomposition import PCA
    from sklearn.ensemble import HistGradientBoostingRegressor, StackingRegressor, VotingRegressor
    from sklearn.feature_selection import VarianceThreshold
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import LinearRegression, RidgeCV
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    tab, inner = slice(0, n_tabular), KFold(3, shuffle=True, random_state=seed)
    k = int(params.get("map_components", 0))
    if k and n_tabular is None:
        raise ValueError("map_components needs lesion-map columns: add the 'map' feature group")

    def tabular(*steps):
        parts = [("tabular", StandardScaler(), tab)]
        if k:
            parts.append(("map", make_pipeline(PCA(k, random_state=seed), StandardScaler()),
                          slice(n_tabular, None)))
        return make_pipeline(ColumnTransformer(parts), *steps)

    # The grid search runs on the transformed columns: scaling and map PCA are fitted once on
    # the training fold (not per inner fold and grid point), which is what makes PCA cheap.
    def svr():
        grid = {"C": list(params.get("C_grid", (1.0, 3.0, 10.0, 30.0))),
                "gamma": list(params.get("gamma_grid", ("scale", 0.01, 0.03)))}
        return tabular(GridSearchCV(SVR(), grid, cv=inner))

    def kernel_ridge():
        grid = {"alpha": list(params.get("alpha_grid", (0.1, 0.3, 1.0, 3.0))),
                "gamma": list(params.get("gamma_grid", (0.003, 0.01, 0.03)))}
        return tabular(GridSearchCV(KernelRidge(kernel="rbf"), grid, cv=inner))

    def soop_svr():
        cut = float(params.get("min_nonzero_fraction", 0.1))
        return make_pipeline(ColumnTransformer([("tabular", NonzeroColumns(cut), tab)]),
                             StandardScaler(), SVR(kernel="rbf"))

    def ridge():
        alphas = list(params.get("alphas", np.logspace(-1, 5, 25).tolist()))
        parts = [("tabular", StandardScaler(), tab)]
        if n_tabular is not None:
            parts.append(("map", VarianceThreshold(0.0), slice(n_tabular, None)))
        return make_pipeline(ColumnTransformer(parts), RidgeCV(alphas=alphas))

    def gbm():
        settings = {"loss": "poisson", "max_iter": 300, "learning_rate": 0.03,
                    "max_leaf_nodes": 8, "min_samples_leaf": 20, "l2_regularization": 1.0,
                    "random_state": seed}
        settings.update({key: v for key, v in params.items() if key not in _OWN})
        if monotonic := params.get("monotonic"):
            if feature_names is None or (missing := set(monotonic) - set(feature_names)):
                raise ValueError(f"monotonic {sorted(monotonic)}: feature name(s) "
                                 f"{sorted(missing) if feature_names else 'not given'}")
            cst = [int(monotonic.get(n, 0)) for n in feature_names[:n_tabular]]
            settings["monotonic_cst"] = cst + [0] * k
        return tabular(HistGradientBoostingRegressor(**settings))

    def sqrt(estimator, default: bool):
        if not (default if sqrt_target is None else sqrt_target):
            return estimator
        return TransformedTargetRegressor(estimator, func=np.sqrt, inverse_func=np.square,
                                          check_inverse=False)

    # Poisson boosting already models a skewed count through its log link: no √ there.
    builders = {"soop_svr": lambda: sqrt(soop_svr(), False), "svr": lambda: sqrt(svr(), True),
                "kernel_ridge": lambda: sqrt(kernel_ridge(), True),
                "ridge": lambda: sqrt(ridge(), False), "gbm": gbm}
    if name in ("ensemble", "stack"):
        members = list(params.get("members", _DEFAULT_MEMBERS))
        if bad := [m for m in members if m not in builders]:
            raise ValueError(f"members {bad}: choose from {sorted(builders)}")
        estimators = [(m, builders[m]()) for m in members]
        if name == "ensemble":
            return VotingRegressor(estimators)
        return StackingRegressor(estimators, LinearRegression(positive=True),
                                 cv=KFold(5, shuffle=True, random_state=seed))
    if name not in builders:
        raise ValueError(f"unknown classical model {name!r}; choose one of {list(CLASSICAL)}")
    return builders[name]()


__all__ = ["CLASSICAL", "NonzeroColumns", "build_classical"]
