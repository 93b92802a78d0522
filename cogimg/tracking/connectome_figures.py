"""Figures of functional connectomes: group averages, group difference, glass brain.

* :func:`group_matrices_figure` — the mean connectome ``(R, R)`` of each group side by side,
  then the difference of the last group minus the first (e.g. AD − CN), on symmetric colour
  scales (Pearson r; the diagonal blanked);
* :func:`glass_brain_figure` — nilearn ``plot_connectome`` of a connectome at the
  parcellation's region centroids (mm, :meth:`cogimg.data.func.Parcellation.centroids_mm`),
  keeping the strongest edges (``edge_threshold``, a percentile of ``|value|``);
* :func:`connectome_run_figures` — both, for every (data root, preset) among the connectome
  runs of a runs folder (deep runs read by a ``ConnectomeDataModule``, baseline runs with
  ``data.layout: connectome``): ``connectome_groups_<preset>`` and
  ``connectome_glass_<preset>`` (the group difference). ``cogimg figures`` calls it.

Group averages are of Pearson correlation matrices of every subject of the preset (nilearn
``ConnectivityMeasure(kind="correlation")`` with the empirical covariance, not its default
Ledoit–Wolf shrinkage: a subject's matrix is its own, nothing is fitted across subjects),
grouped by ``diagnosis``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cogimg.tracking import figures


def group_matrices_figure(groups: Mapping[str, np.ndarray], path: str | Path,
                          region_names: Sequence[str] | None = None, title: str = "") -> Path:
    """Each group's mean matrix ``(R, R)`` and the last − first difference; returns the PNG."""
    import matplotlib.pyplot as plt

    names = list(groups)
    if not names:
        raise ValueError("no group to plot")
    panels = {g: np.asarray(groups[g], dtype=float) for g in names}
    if len(names) > 1:
        panels[f"{names[-1]} − {names[0]}"] = panels[names[-1]] - panels[names[0]]
    fig, axes = plt.subplots(1, len(panels), squeeze=False, layout="constrained",
                             figsize=(max(figures.TWO_COLUMN_IN, 2.2 * len(panels)), 2.2))
    for k, (ax, (name, m)) in enumerate(zip(axes[0], panels.items())):
        m = m.copy()
        np.fill_diagonal(m, np.nan)
        is_diff = len(names) > 1 and k == len(panels) - 1
        vmax = float(np.nanmax(np.abs(m))) or 1.0
        im = ax.imshow(m, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"{name} ({'Δ r' if is_diff else 'r'})")
        ax.set_xticks([])
        ax.set_yticks([])
        if region_names is not None and len(region_names) <= 20:
            ax.set_yticks(range(len(region_names)), region_names, fontsize=5)
        fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return figures.save_figure(fig, path)


def glass_brain_figure(matrix: np.ndarray, coords_mm: np.ndarray, path: str | Path,
                       edge_threshold: str | float = "95%", title: str = "") -> Path:
    """nilearn ``plot_connectome`` of ``matrix`` ``(R, R)`` at ``coords_mm`` ``(R, 3)``."""
    import matplotlib.pyplot as plt
    from nilearn import plotting

    matrix, coords_mm = np.asarray(matrix, dtype=float), np.asarray(coords_mm, dtype=float)
    if matrix.shape != (len(coords_mm), len(coords_mm)) or coords_mm.shape[1:] != (3,):
        raise ValueError(f"a {matrix.shape} connectome needs ({matrix.shape[0]}, 3) centroids, "
                         f"got {coords_mm.shape}")
    matrix = matrix.copy()
    np.fill_diagonal(matrix, 0.0)
    fig = plt.figure(figsize=(figures.TWO_COLUMN_IN, 2.4))
    plotting.plot_connectome(matrix, coords_mm, edge_threshold=edge_threshold, figure=fig,
                             title=title or None, node_size=8, colorbar=True)
    return figures.save_figure(fig, path)


def connectome_config(run) -> dict | None:
    """``{"root", "preset", "cache_dir"}`` of a connectome run (from its ``config.yaml``), or
    ``None`` when the run did not read connectomes."""
    import yaml

    config_file = Path(run.path) / "config.yaml"
    if not config_file.is_file():
        return None
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    data = config.get("data") or {}
    if data.get("layout") == "connectome":
        return {"root": data["root"], "preset": data.get("preset", "ad"),
                "cache_dir": data.get("cache_dir")}
    if str(data.get("class_path", "")).endswith("ConnectomeDataModule"):
        args = data.get("init_args") or {}
        return {"root": args["data_root"], "preset": args.get("preset", "ad"),
                "cache_dir": args.get("cache_dir")}
    return None


def preset_group_matrices(root: str | Path, preset: str, cache_dir: str | Path | None = None
                          ) -> tuple[dict[str, np.ndarray], list[str]]:
    """Mean Pearson correlation matrix of each diagnosis of ``preset`` (classes order), and the
    region names."""
    from nilearn.connectome import ConnectivityMeasure
    from sklearn.covariance import EmpiricalCovariance

    from cogimg.data.connectome import group_matrices
    from cogimg.data.func import load_func_dataset
    from cogimg.data.participants import as_frame, read_participants
    from cogimg.diseases import get_preset

    root = Path(root)
    cache = Path(cache_dir) if cache_dir else root / "derivatives" / "cogimg"
    dataset = load_func_dataset(root, cache_dir=cache / "func")
    table = as_frame(read_participants(root / "participants.tsv")).set_index("participant_id")
    spec = get_preset(preset)
    ids = [s for s in sorted(dataset.series) if s in table.index
           and table.loc[s, "diagnosis"] in spec.diagnoses]
    if not ids:
        raise ValueError(f"{root}: no subject of preset {preset!r} has time series")
    measure = ConnectivityMeasure(kind="correlation", cov_estimator=EmpiricalCovariance(),
                                  standardize="zscore_sample")
    mats = measure.fit_transform([np.asarray(dataset.series[s], float) for s in ids])
    groups = group_matrices(mats, [str(table.loc[s, "diagnosis"]) for s in ids])
    order = [d for d in spec.diagnoses if d in groups]
    return {d: groups[d] for d in order}, list(dataset.region_names)


def connectome_run_figures(runs: Sequence, out: str | Path, skipped: list[str]) -> list[Path]:
    """The group and glass-brain figures of every (root, preset) among ``runs``."""
    from cogimg.data.func import default_parcellation

    out, written, seen = Path(out), [], set()
    for run in runs:
        config = connectome_config(run)
        if config is None or (config["root"], config["preset"]) in seen:
            continue
        seen.add((config["root"], config["preset"]))
        preset = config["preset"]
        try:
            groups, names = preset_group_matrices(config["root"], preset, config["cache_dir"])
            written.append(group_matrices_figure(groups, out / f"connectome_groups_{preset}",
                                                 names, title=f"{preset}: mean connectome"))
            coords = default_parcellation(config["root"]).centroids_mm()
            first, last = next(iter(groups)), list(groups)[-1]
            diff = groups[last] - groups[first] if len(groups) > 1 else groups[first]
            label = f"{last} − {first}" if len(groups) > 1 else first
            written.append(glass_brain_figure(diff, coords, out / f"connectome_glass_{preset}",
                                              title=f"{preset}: {label}"))
        except (OSError, ValueError, KeyError) as err:
            skipped.append(f"connectome figures of {preset} ({config['root']}): {err}")
    return written


__all__ = ["connectome_config", "connectome_run_figures", "glass_brain_figure",
           "group_matrices_figure", "preset_group_matrices"]
