"""Synthetic resting-state BOLD with known networks, disease effects and confounds.

**Parcellation** (:mod:`cogimg.data.synth.bold_atlas`). A whole-brain parcellation on a 4 mm
MNI grid, built from the generator's own template (no download), each region belonging to a
large-scale network; written once per cohort under ``derivatives/cogimg_atlas``.

**Network model.** Each network has a latent band-limited (0.01–0.1 Hz) time course; the
networks are correlated through :data:`NETWORK_CORRELATION`. Region ``r`` carries
``x_r = W_r · L + n_r e_r`` with loadings ``W`` (primary network 0.8, plus the secondary
couplings in :data:`SECONDARY`: putamen–sensorimotor, caudate–frontoparietal …) and
band-limited region noise ``e_r``, so the expected correlation matrix is known in closed form
(``Σ = W C Wᵀ + diag(n²)``).

**Disease effects** (scaled by the difficulty's ``effect``) act on ``W``:

* AD: default-mode loadings fall with the hidden stage (``1 − 0.35·s``; PCC ``1 − 0.5·s``;
  hippocampus ``1 − 0.8·s``), weakening DMN and hippocampus–PCC coupling;
* PD: the putamen's sensorimotor loading falls with that side's DAT loss;
* stroke: every loading of a parcel falls with the fraction of it the (real-shape) lesion
  covers (``1 − 2·hit``), and lesioned voxels carry no neural signal.

The ground truth of every edge whose expected correlation changes by ≥ :data:`EDGE_MIN_DELTA`
is written per subject (``region_a, region_b, effect, magnitude`` = healthy − diseased
expected correlation).

**Image and confounds.** Voxel signal = baseline (tissue-weighted, site gain) × (1 + 2 %
neural signal in grey matter + global signal + WM signal + CSF signal) minus the first-order
intensity change of the head's rigid motion (``∇S₀ · (t + ω × r)``) plus thermal noise.
Motion is a random walk with spikes (scaled per site and subject); the confounds TSV holds
the six motion parameters, framewise displacement (Power et al. 2012), DVARS and the
global/WM/CSF means measured in the generated image, with fMRIPrep's derivative and power
expansions. Sites differ in TR, noise, motion and region noise. Stored as int16 in
integer scanner units (zero outside the brain), the raw BIDS file hard-linked as the fMRIPrep
derivative (the synthetic data are already in MNI space).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import signal as sps

from cogimg.data.synth.bold_atlas import (
    BOLD_SPACING_MM,
    NETWORKS,
    BoldGrid,
)
from cogimg.data.synth.writer import write_json
from cogimg.io import atomic_save_nifti, atomic_write_text

#: Correlation between the latent network time courses (symmetric; unlisted pairs 0).
NETWORK_CORRELATION = {("default_mode", "frontoparietal"): 0.2, ("default_mode", "salience"): -0.3,
                       ("sensorimotor", "visual"): 0.3, ("sensorimotor", "basal_ganglia"): 0.2,
                       ("salience", "frontoparietal"): 0.3}
#: (region base name, network) → secondary loading.
SECONDARY = {("putamen", "sensorimotor"): 0.5, ("thalamus", "sensorimotor"): 0.35,
             ("pallidum", "sensorimotor"): 0.3, ("caudate", "frontoparietal"): 0.3}
PRIMARY_LOADING = 0.8
BOLD_AMPLITUDE = 0.02  # neural signal, fraction of baseline in pure grey matter
EDGE_MIN_DELTA = 0.02
TR_FACTORS = (1.0, 1.25, 0.8, 1.1, 0.9)
CONFOUND_BASES = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                  "global_signal", "white_matter", "csf")


@dataclass(frozen=True)
class BoldSite:
    """A site's functional protocol: TR (s), thermal noise (fraction of baseline), motion
    scale, region noise SD (relative to unit network signal) and intensity gain."""

    name: str
    tr_s: float
    noise: float
    motion: float
    region_noise: float
    gain: float


@dataclass(frozen=True)
class BoldConfig:
    """Synthetic BOLD settings: ``n_volumes`` per run and one :class:`BoldSite` per site."""

    n_volumes: int = 150
    tr_s: float = 2.0
    sites: tuple[BoldSite, ...] = field(default_factory=tuple)


def make_bold_sites(rng: np.random.Generator, n_sites: int, tr_s: float, noise_scale: float,
                    site_scale: float) -> tuple[BoldSite, ...]:
    """Draw each site's protocol (Latin-hypercube spread, like :mod:`.sites`)."""
    def lhs(lo, hi):
        return lo + (hi - lo) * (rng.permutation(n_sites) + rng.uniform(0.0, 1.0, n_sites)) / n_sites

    noise = lhs(0.008, 0.02) * noise_scale
    motion = lhs(0.6, 1.6)
    region_noise = lhs(0.5, 0.8)
    gain = np.exp(lhs(-0.3, 0.3) * site_scale)
    return tuple(BoldSite(f"site-{k + 1}", round(tr_s * TR_FACTORS[k % len(TR_FACTORS)], 3),
                          float(noise[k]), float(motion[k]), float(region_noise[k]), float(gain[k]))
                 for k in range(n_sites))


# --------------------------------------------------------------------------- network model
def network_correlation() -> np.ndarray:
    """(K, K) correlation of the latent network time courses."""
    c = np.eye(len(NETWORKS))
    for (a, b), r in NETWORK_CORRELATION.items():
        i, j = NETWORKS.index(a), NETWORKS.index(b)
        c[i, j] = c[j, i] = r
    return c


def base_loadings(grid: BoldGrid) -> np.ndarray:
    """(R, K) healthy loadings of each region on each network."""
    w = np.zeros((len(grid.names), len(NETWORKS)))
    for r, (name, net) in enumerate(zip(grid.names, grid.networks)):
        w[r, NETWORKS.index(net)] = PRIMARY_LOADING
        base = name.rsplit("_", 1)[0]
        for (region, other), value in SECONDARY.items():
            if region == base:
                w[r, NETWORKS.index(other)] = value
    return w


def expected_correlation(w: np.ndarray, region_noise: np.ndarray) -> np.ndarray:
    """(R, R) correlation of ``x = W L + n e`` for latent correlation :func:`network_correlation`."""
    cov = w @ network_correlation() @ w.T + np.diag(region_noise**2)
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def disease_scales(grid: BoldGrid, ad_stage: float, pd_loss: dict[str, float],
                   parcel_hit: np.ndarray, effect: float) -> dict[str, np.ndarray]:
    """Per effect, an (R, K) multiplier of the loadings (1 = unchanged)."""
    r_n, k_n = len(grid.names), len(NETWORKS)
    out = {}
    dmn = NETWORKS.index("default_mode")
    ad = np.ones((r_n, k_n))
    for r, (name, net) in enumerate(zip(grid.names, grid.networks)):
        base = name.rsplit("_", 1)[0]
        drop = {"hippocampus": 0.8, "pcc": 0.5}.get(base, 0.35 if net == "default_mode" else 0.0)
        ad[r, dmn] = max(0.0, 1.0 - min(1.0, drop * effect) * ad_stage)
    out["ad"] = ad
    pd = np.ones((r_n, k_n))
    sm = NETWORKS.index("sensorimotor")
    for side, loss in pd_loss.items():
        name = f"putamen_{side}"
        if name in grid.names and loss > 0:
            pd[grid.names.index(name), sm] = max(0.0, 1.0 - min(1.0, loss * effect))
    out["pd"] = pd
    out["stroke"] = np.repeat(np.clip(1.0 - 2.0 * parcel_hit, 0.0, 1.0)[:, None], k_n, 1)
    return out


def edge_truth(w0: np.ndarray, scales: dict[str, np.ndarray], region_noise: np.ndarray,
               names: list[str]) -> list[dict]:
    """Rows ``region_a, region_b, effect, magnitude`` for every edge an effect changes by
    ≥ :data:`EDGE_MIN_DELTA` (magnitude = healthy − affected expected correlation)."""
    healthy = expected_correlation(w0, region_noise)
    rows = []
    iu = np.triu_indices(len(names), 1)
    for effect, scale in scales.items():
        if np.all(scale == 1.0):
            continue
        delta = healthy - expected_correlation(w0 * scale, region_noise)
        for i, j in zip(*iu):
            if abs(delta[i, j]) >= EDGE_MIN_DELTA:
                rows.append({"region_a": names[i], "region_b": names[j], "effect": effect,
                             "magnitude": round(float(delta[i, j]), 4)})
    return rows


def _band(rng: np.random.Generator, n: int, columns: int, tr_s: float, lo: float | None,
          hi: float | None) -> np.ndarray:
    """(n, columns) z-scored Gaussian noise filtered to [lo, hi] Hz (zero-phase Butterworth)."""
    pad = 40
    x = rng.standard_normal((n + 2 * pad, columns))
    nyq = 0.5 / tr_s
    hi = None if hi is None or hi >= nyq * 0.95 else hi
    if lo and hi:
        sos = sps.butter(2, [lo, hi], btype="bandpass", fs=1.0 / tr_s, output="sos")
    elif lo:
        sos = sps.butter(2, lo, btype="highpass", fs=1.0 / tr_s, output="sos")
    else:
        sos = sps.butter(2, hi, btype="lowpass", fs=1.0 / tr_s, output="sos") if hi else None
    if sos is not None:
        x = sps.sosfiltfilt(sos, x, axis=0)
    x = x[pad:-pad]
    return (x - x.mean(0)) / x.std(0)


def motion_parameters(rng: np.random.Generator, n: int, scale: float) -> np.ndarray:
    """(n, 6): translations (mm) and rotations (rad), a random walk plus persistent jumps."""
    steps = rng.normal(0.0, 1.0, (n, 6)) * np.r_[[0.03] * 3, [0.0005] * 3] * scale
    for _ in range(rng.poisson(2.0 * scale**2)):
        t = int(rng.integers(1, n))
        steps[t] += rng.normal(0.0, 1.0, 6) * np.r_[[0.4] * 3, [0.006] * 3] * scale
    steps[0] = 0.0
    return np.cumsum(steps, 0)


def framewise_displacement(motion: np.ndarray, radius_mm: float = 50.0) -> np.ndarray:
    """(n,) Power et al. (2012) FD in mm: Σ|Δtranslation| + radius · Σ|Δrotation|; FD[0] = 0."""
    d = np.abs(np.diff(motion, axis=0))
    fd = d[:, :3].sum(1) + radius_mm * d[:, 3:].sum(1)
    return np.r_[0.0, fd]


def lesion_on_grid(lesion_mask: np.ndarray, template_mm: np.ndarray, voxel_ml: float,
                   grid: BoldGrid) -> np.ndarray:
    """Fraction (0–1) of each 4 mm voxel covered by a subject-space lesion (via its MNI coords)."""
    out = np.zeros(grid.shape, np.float32)
    if lesion_mask is None or not lesion_mask.any():
        return out
    mm = template_mm[lesion_mask.astype(bool)]
    vox = np.rint((mm - grid.affine[:3, 3]) / BOLD_SPACING_MM).astype(int)
    ok = np.all((vox >= 0) & (vox < np.array(grid.shape)), axis=1)
    np.add.at(out, tuple(vox[ok].T), voxel_ml * 1000.0 / BOLD_SPACING_MM**3)
    return np.clip(out, 0.0, 1.0)


@dataclass
class BoldResult:
    """One subject's synthetic run: ``data`` float32 (X, Y, Z, T), ``confounds`` columns,
    ``edges`` ground-truth rows, ``info`` (JSON), ``tr_s``."""

    data: np.ndarray
    confounds: dict[str, np.ndarray]
    edges: list[dict]
    info: dict
    tr_s: float


def simulate_bold(rng: np.random.Generator, grid: BoldGrid, site: BoldSite, n_volumes: int,
                  ad_stage: float, pd_loss: dict[str, float], lesion_frac: np.ndarray,
                  effect: float = 1.0) -> BoldResult:
    """Simulate one resting-state run on ``grid`` (see the module docstring)."""
    tr, t_n, r_n = site.tr_s, n_volumes, len(grid.names)
    labels = grid.labels.astype(int)
    parcel_size = np.bincount(labels.ravel(), minlength=r_n + 1)[1:]
    parcel_hit = np.bincount(labels.ravel(), weights=lesion_frac.ravel(), minlength=r_n + 1)[1:]
    parcel_hit = parcel_hit / np.maximum(parcel_size, 1)

    w0 = base_loadings(grid) * rng.normal(1.0, 0.05, (r_n, len(NETWORKS)))
    region_noise = site.region_noise * rng.normal(1.0, 0.05, r_n)
    scales = disease_scales(grid, ad_stage, pd_loss, parcel_hit, effect)
    w = w0 * scales["ad"] * scales["pd"] * scales["stroke"]
    edges = edge_truth(w0, scales, region_noise, grid.names)

    chol = np.linalg.cholesky(network_correlation())
    latent = _band(rng, t_n, len(NETWORKS), tr, 0.01, 0.1) @ chol.T
    region = latent @ w.T + _band(rng, t_n, r_n, tr, 0.01, 0.1) * region_noise  # (T, R)
    phys = _band(rng, t_n, 3, tr, 0.01, None)  # global, WM, CSF physiological signals
    motion = motion_parameters(rng, t_n, site.motion * float(np.exp(rng.normal(0.0, 0.5))))

    brain = grid.brain
    gm, wm, csf = (m[brain] for m in (grid.gm, grid.wm, grid.csf))
    s0 = 1000.0 * site.gain * (0.9 * gm + 0.75 * wm + 1.3 * csf + 0.05)
    s0_full = np.zeros(grid.shape, np.float32)
    s0_full[brain] = s0
    grad = np.stack(np.gradient(s0_full, BOLD_SPACING_MM), -1)[brain]  # (N, 3) per mm
    pos = np.argwhere(brain) * BOLD_SPACING_MM + grid.affine[:3, 3] - np.array([0.0, -18.0, 10.0])
    gain_motion = np.concatenate([grad, np.cross(pos, grad)], 1)  # (N, 6)

    lab = labels[brain]
    neural = np.zeros((t_n, lab.size), np.float32)
    inside = lab > 0
    neural[:, inside] = region[:, lab[inside] - 1] * (gm[inside] * (1.0 - lesion_frac[brain][inside]))
    rel = BOLD_AMPLITUDE * neural + np.outer(phys[:, 0], np.full(lab.size, 0.01))
    rel += np.outer(phys[:, 1], 0.006 * wm) + np.outer(phys[:, 2], 0.015 * csf)
    data_b = s0 * (1.0 + rel) - motion @ gain_motion.T
    data_b += rng.normal(0.0, site.noise * 1000.0 * site.gain, data_b.shape)
    data = np.zeros((*grid.shape, t_n), np.float32)
    data[brain] = data_b.T

    confounds = {name: motion[:, j] for j, name in enumerate(CONFOUND_BASES[:6])}
    confounds["global_signal"] = data_b.mean(1)
    confounds["white_matter"] = data_b[:, wm >= 0.8].mean(1)
    csf_mask = csf >= np.quantile(csf, 0.99)
    confounds["csf"] = data_b[:, csf_mask].mean(1)
    fd = framewise_displacement(motion)
    pct = data_b / np.maximum(s0, 1.0) * 100.0
    dvars = np.r_[np.nan, np.sqrt(np.mean(np.diff(pct, axis=0) ** 2, axis=1))]
    info = {"site": site.name, "tr_s": tr, "n_volumes": t_n, "ad_stage": round(float(ad_stage), 4),
            "pd_putamen_loss": {k: round(float(v), 4) for k, v in pd_loss.items()},
            "parcels_hit": {grid.names[r]: round(float(h), 4) for r, h in enumerate(parcel_hit) if h > 0},
            "mean_fd_mm": round(float(fd.mean()), 4), "n_perturbed_edges": len(edges)}
    confounds["framewise_displacement"] = fd
    confounds["dvars"] = dvars
    confounds["std_dvars"] = dvars / np.nanmedian(dvars)
    return BoldResult(data, confounds, edges, info, tr)


def confounds_table(confounds: dict[str, np.ndarray]) -> str:
    """fMRIPrep-style TSV text: each base column with ``_derivative1``, ``_power2`` and
    ``_derivative1_power2``, then ``framewise_displacement``, ``dvars``, ``std_dvars``
    (``n/a`` where a value is undefined: the first row of differences)."""
    cols = {}
    for base in CONFOUND_BASES:
        x = confounds[base].astype(float)
        d = np.r_[np.nan, np.diff(x)]
        cols[base], cols[f"{base}_derivative1"] = x, d
        cols[f"{base}_power2"], cols[f"{base}_derivative1_power2"] = x**2, d**2
    fd = confounds["framewise_displacement"].astype(float).copy()
    fd[0] = np.nan
    cols["framewise_displacement"] = fd
    cols["dvars"], cols["std_dvars"] = confounds["dvars"], confounds["std_dvars"]
    names = list(cols)
    lines = ["\t".join(names)]
    for t in range(len(fd)):
        lines.append("\t".join("n/a" if not np.isfinite(cols[c][t]) else f"{cols[c][t]:.6g}"
                               for c in names))
    return "\n".join(lines) + "\n"


def write_bold(root: Path, pid: str, result: BoldResult, affine: np.ndarray) -> dict:
    """Write raw BIDS func, the fMRIPrep-like derivative and the edge ground truth."""
    from cogimg.data.func.bold import FMRIPREP_DIR, SPACE

    # Integer scanner units (slope 1): rounding (SD 0.29) is far below the thermal noise, and
    # coarser steps compress better than nibabel's full-range int16 scaling.
    # Fortran order: NIfTI's own, so nibabel writes it without a transposing copy.
    data = np.asfortranarray(np.clip(np.rint(result.data), -32768, 32767).astype(np.int16))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((BOLD_SPACING_MM,) * 3 + (result.tr_s,))
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=4)
    raw = root / pid / "func" / f"{pid}_task-rest_bold.nii.gz"
    atomic_save_nifti(img, raw)
    sidecar = {"RepetitionTime": result.tr_s, "TaskName": "rest"}
    write_json(raw.with_name(f"{pid}_task-rest_bold.json"), sidecar)
    deriv = root / FMRIPREP_DIR / pid / "func"
    deriv.mkdir(parents=True, exist_ok=True)
    pre = deriv / f"{pid}_task-rest_space-{SPACE}_desc-preproc_bold.nii.gz"
    try:
        os.link(raw, pre)  # same bytes: no second copy on disk
    except OSError:
        shutil.copyfile(raw, pre)
    write_json(pre.with_name(pre.name.replace(".nii.gz", ".json")), sidecar)
    conf = deriv / f"{pid}_task-rest_desc-confounds_timeseries.tsv"
    atomic_write_text(conf, confounds_table(result.confounds))
    write_json(conf.with_suffix(".json"), {"framewise_displacement": {
        "Description": "Power et al. (2012) framewise displacement, 50 mm head radius", "Units": "mm"}})
    from cogimg.data.func.truth import edges_path

    truth = edges_path(root, pid).parent
    lines = ["region_a\tregion_b\teffect\tmagnitude"] + [
        f"{e['region_a']}\t{e['region_b']}\t{e['effect']}\t{e['magnitude']}" for e in result.edges]
    atomic_write_text(truth / f"{pid}_task-rest_edges.tsv", "\n".join(lines) + "\n")
    write_json(truth / f"{pid}_task-rest_network.json", result.info)
    return {"bold": str(raw.relative_to(root)), "preproc": str(pre.relative_to(root)),
            "confounds": str(conf.relative_to(root)),
            "edges": str((truth / f"{pid}_task-rest_edges.tsv").relative_to(root)), **result.info}


def bold_config_json(config: BoldConfig) -> dict:
    return {"n_volumes": config.n_volumes, "tr_s": config.tr_s,
            "sites": [asdict(s) for s in config.sites]}
