"""Clinical (tabular) columns → standardised float32 features for the classification datamodule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


class TabularEncoder:
    """Clinical columns → float32 features, standardised with TRAINING statistics only.

    Per column, in the given order: a numeric column gives ``<col>`` = (x − train mean) /
    train std (scikit-learn ``StandardScaler``, missing values left out of the fit) with
    missing values imputed as the train mean (0 after standardisation) and ``<col>_missing``
    (1 where missing). A text column gives one-hot ``<col>=<value>`` for the values seen in
    training (unseen or missing → all zeros) and ``<col>_missing``. Missing = NaN, ``n/a``
    or empty. The indicator columns are always present, so train/val/test have the same F.
    """

    def __init__(self, columns: Sequence[str]):
        self.columns = list(columns)

    @staticmethod
    def _missing(values: pd.Series) -> np.ndarray:
        return (values.isna() | values.astype(str).str.strip().isin(["n/a", ""])).to_numpy()

    def fit(self, table: pd.DataFrame) -> TabularEncoder:
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        self.encoders, self.feature_names = {}, []
        for col in self.columns:
            values, missing = table[col], self._missing(table[col])
            if pd.api.types.is_numeric_dtype(values):
                self.encoders[col] = StandardScaler().fit(values.to_numpy(float)[:, None])
                self.feature_names += [col, f"{col}_missing"]
            else:
                seen = sorted(set(values[~missing].astype(str)))
                self.encoders[col] = OneHotEncoder(categories=[seen], handle_unknown="ignore",
                                                   sparse_output=False).fit(np.array(seen, dtype=object)[:, None])
                self.feature_names += [f"{col}={v}" for v in seen] + [f"{col}_missing"]
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """``(N, F)`` float32 features of the rows of ``table``."""
        blocks = []
        for col in self.columns:
            encoder, values, missing = self.encoders[col], table[col], self._missing(table[col])
            if hasattr(encoder, "mean_"):
                x = encoder.transform(pd.to_numeric(values, errors="coerce").to_numpy(float)[:, None])
                blocks.append(np.nan_to_num(np.where(missing[:, None], 0.0, x)))
            else:
                text = np.where(missing, "", values.astype(str).to_numpy())[:, None].astype(object)
                blocks.append(encoder.transform(text) if encoder.categories_[0].size else
                              np.zeros((len(table), 0)))
            blocks.append(missing[:, None].astype(float))
        return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((len(table), 0), np.float32)
