"""How much of the in-site → out-of-site drop an adaptation variant recovers.

Inputs are the rows of :class:`~cogimg.paradigms.adaptation.protocol.LeaveSiteOut`: per site
(``run``'s return value) or per subject (its ``subject_rows``), each keyed by ``site``,
``variant`` (``baseline`` or a variant) and ``scope`` (``in_site`` or ``out_of_site``).
A variant's recovered share is ``(adapted − out) / (in − out)`` of the means over sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def paired_recovery_bootstrap(subject_tables: Sequence[Any], n_boot: int = 1000,
                              seed: int = 0) -> dict[str, Any]:
    """Recovered share of the in→out drop over repeats, with a paired subject bootstrap CI.

    ``subject_tables``: one table per repeat (training seed) of :attr:`~cogimg.paradigms.adaptation.protocol.LeaveSiteOut.subject_rows`
    (a DataFrame or a list of dicts; columns ``site, variant, scope, subject_id, value``),
    all on the same split. For a mean-over-subjects metric (Dice): each row kind's score is
    the mean over repeats of the mean over held-out sites of the mean over subjects — the
    same as :func:`recovery_table` per repeat, then averaged — and a variant's share is
    ``(adapted − out) / (in − out)`` of those means.

    The CI resamples subjects, not repeats: per held-out site, the out-of-site subjects are
    drawn once per resample and the same draw is used for the baseline's out-of-site row and
    every variant's row (the same subjects, so adapted − out is paired) and for every
    repeat; the in-site subjects of that fold are drawn in their own set. 95 % percentile
    interval of ``n_boot`` resamples. Repeats must score the same subjects per site and row.

    Also ``gain`` = score − out-of-site with its paired CI (``gain_low``, ``gain_high``; for
    the in-site row, the drop in − out), which stays finite when the drop's CI nears 0.

    Returns ``{"table": [{variant, score, recovered, ci_low, ci_high, gain, gain_low,
    gain_high}, ...],
    "per_seed": [{variant: recovered}, ...], "n_boot": n_boot}``; table rows are in-site,
    out-of-site, then the variants in order of appearance.
    """
    import pandas as pd

    frames = [pd.DataFrame(t) for t in subject_tables]
    if not frames:
        raise ValueError("no subject tables")
    per_seed = [{r["variant"]: r["recovered"] for r in recovery_table(_site_rows(f))[2:]} for f in frames]
    for f in frames:
        f["kind"] = np.where(f["scope"] == "in_site", "in-site",
                             np.where(f["variant"] == "baseline", "out-of-site", f["variant"]))
    data = pd.concat([f.assign(repeat=k) for k, f in enumerate(frames)], ignore_index=True)
    data = data[data["scope"].isin(["in_site", "out_of_site"])]
    kinds = list(dict.fromkeys(["in-site", "out-of-site", *data["kind"]]))
    sites = list(dict.fromkeys(data["site"]))
    rng = np.random.default_rng(seed)
    # boot[kind]: (n_boot + 1,) mean over sites of the resampled subject means; index 0 = no resampling
    boot = {kind: np.zeros(n_boot + 1) for kind in kinds}
    for site in sites:
        for group in (["in-site"], kinds[1:]):  # in-site drawn alone; out and the variants paired
            rows = data[(data["site"] == site) & data["kind"].isin(group)]
            # subject × (kind) of the repeat-averaged value; every repeat must have every subject
            table = rows.pivot_table(index="subject_id", columns=["kind", "repeat"], values="value",
                                     aggfunc="first")
            if table.isna().to_numpy().any() or table.columns.get_level_values(1).nunique() != len(frames):
                raise ValueError(f"site {site}: repeats/rows do not score the same subjects ({group})")
            n = len(table)
            counts = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1 / n), size=n_boot)])
            for kind in group:
                values = table[kind].mean(axis=1).to_numpy()  # over repeats
                boot[kind] += counts @ values / n / len(sites)
    drop = boot["in-site"] - boot["out-of-site"]
    table = []
    for kind in kinds:
        row = {"variant": kind, "score": float(boot[kind][0]), "recovered": float("nan"),
               "ci_low": float("nan"), "ci_high": float("nan")}
        if kind != "in-site":
            with np.errstate(divide="ignore", invalid="ignore"):
                share = (boot[kind] - boot["out-of-site"]) / drop
            row["recovered"] = float(share[0]) if drop[0] > 0 else float("nan")
            if kind != "out-of-site" and drop[0] > 0:
                row["ci_low"], row["ci_high"] = (float(v) for v in np.nanpercentile(share[1:], [2.5, 97.5]))
        gain = boot[kind] - boot["out-of-site"]
        row.update(gain=float(gain[0]), gain_low=float(np.percentile(gain[1:], 2.5)),
                   gain_high=float(np.percentile(gain[1:], 97.5)))
        table.append(row)
    return {"table": table, "per_seed": per_seed, "n_boot": n_boot}


def _site_rows(subjects) -> list[dict[str, Any]]:
    """Per-site mean rows (``recovery_table``'s input) from per-subject rows."""
    means = subjects.groupby(["site", "variant", "scope"], sort=False)["value"].mean()
    return [{"site": s, "variant": v, "scope": c, "value": float(x)} for (s, v, c), x in means.items()]


def recovery_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over sites of in-site, out-of-site and each variant's adapted score, and the
    fraction of the in→out drop each variant recovers: ``(adapted − out) / (in − out)``."""
    def mean(variant: str, scope: str) -> float:
        values = [r["value"] for r in rows if r["variant"] == variant and r["scope"] == scope]
        return float(np.mean(values)) if values else float("nan")

    in_site, out_site = mean("baseline", "in_site"), mean("baseline", "out_of_site")
    drop = in_site - out_site
    table = [{"variant": "in-site", "score": in_site, "recovered": float("nan")},
             {"variant": "out-of-site", "score": out_site, "recovered": 0.0}]
    for variant in dict.fromkeys(r["variant"] for r in rows if r["variant"] != "baseline"):
        adapted = mean(variant, "out_of_site")
        table.append({"variant": variant, "score": adapted,
                      "recovered": (adapted - out_site) / drop if drop > 0 else float("nan")})
    return table
