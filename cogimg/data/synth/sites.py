"""Scanner (site) models: what a site does to an ideal image.

Each of the K sites gets a fixed scanner model drawn once per cohort: tissue-contrast
scaling (e.g. a 1.5 T MPRAGE has less grey/white contrast than a 3 T one), a non-linear
intensity response curve (``gain · ref · (I / ref)^γ``), a smooth multiplicative bias field
(second-order Legendre polynomial in log space), a noise level (Rician for magnitude MRI,
Gaussian for ADC and PET) and a point-spread function (anisotropic Gaussian: thick-slice
2D acquisitions blur along z). Parameters are spread over sites by Latin-hypercube
sampling, so even three sites differ in every respect, and each subject jitters around
its site's values (re-shimming, positioning, coil loading).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from cogimg.data.synth.contrasts import MODALITIES, MRI_MODALITIES, TISSUE_MEANS
from cogimg.data.synth.difficulty import Difficulty

#: Scanner units of each modality's white matter on a gain-1 scanner (MRI is in arbitrary
#: units; ADC stays in 10⁻⁶ mm²/s; PET stays in SUVR / uptake ratio).
#: Extra noise of the diffusion series (a b=1000 image has low SNR; ADC is a log-ratio of
#: two noisy images), calibrated with benchmarks/sim2real_calibration.py.
DIFFUSION_NOISE: dict[str, float] = {"dwi": 2.0, "adc": 2.5}
UNIT_SCALE: dict[str, float] = {
    "T1w": 1000.0, "FLAIR": 800.0, "T2starw": 600.0, "dwi": 400.0, "adc": 1.0,
    "pet_amyloid": 1.0, "pet_dat": 1.0,
}


@dataclass
class ScannerModel:
    """One site's scanner. Per-modality dicts are keyed by :data:`MODALITIES`.

    Attributes:
        name: ``site-1`` … ``site-K``.
        tissue_scale: modality → tissue → multiplicative factor on the tissue mean.
        gamma: exponent of the intensity response curve (1 = linear).
        gain: global intensity scale.
        noise: noise SD as a fraction of the white-matter signal (PET: of the mean uptake).
        fwhm_mm: point-spread function FWHM along (x, y, z), mm.
        bias_amplitude: maximum |log bias| over the field of view.
        bias_coeffs: (9,) Legendre coefficients of the site's log bias field shape.
    """

    name: str
    tissue_scale: dict[str, dict[str, float]]
    gamma: dict[str, float]
    gain: dict[str, float]
    noise: dict[str, float]
    fwhm_mm: dict[str, tuple[float, float, float]]
    bias_amplitude: float
    bias_coeffs: list[float]

    def to_json(self) -> dict:
        out = asdict(self)
        return _round(out)


def _round(x):
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    if isinstance(x, float):
        return round(x, 4)
    return x


def _lhs(rng: np.random.Generator, k: int, lo: float, hi: float) -> np.ndarray:
    """k values spread over [lo, hi] by Latin-hypercube sampling (one per stratum)."""
    u = (rng.permutation(k) + rng.uniform(0.0, 1.0, k)) / k
    return lo + (hi - lo) * u


def make_sites(rng: np.random.Generator, n_sites: int, difficulty: Difficulty) -> list[ScannerModel]:
    """Draw ``n_sites`` scanner models (deterministic given ``rng``)."""
    if n_sites < 1:
        raise ValueError(f"sites must be ≥ 1, got {n_sites}")
    sv, nv = difficulty.site, difficulty.noise
    contrast = {m: _lhs(rng, n_sites, -0.12 * sv, 0.12 * sv) for m in MRI_MODALITIES}
    gamma = {m: np.exp(_lhs(rng, n_sites, -0.25 * sv, 0.25 * sv)) for m in MRI_MODALITIES}
    noise = {m: _lhs(rng, n_sites, 0.015, 0.05) * nv * DIFFUSION_NOISE.get(m, 1.0)
             for m in MRI_MODALITIES}
    slice_fwhm = _lhs(rng, n_sites, 1.0, 1.0 + 3.5 * sv)  # thick-slice 2D protocols
    inplane_fwhm = _lhs(rng, n_sites, 0.8, 0.8 + 1.2 * sv)
    pet_fwhm = {"pet_amyloid": _lhs(rng, n_sites, 5.0, 5.0 + 3.0 * sv),
                "pet_dat": _lhs(rng, n_sites, 8.0, 8.0 + 4.0 * sv)}
    bias_amp = _lhs(rng, n_sites, 0.05, 0.05 + 0.2 * sv)
    sites = []
    for k in range(n_sites):
        tissue_scale, gam, gain, nz, fwhm = {}, {}, {}, {}, {}
        for m in MODALITIES:
            if m in MRI_MODALITIES:
                c = float(contrast[m][k])
                # Contrast mostly moves grey matter relative to white matter; CSF follows
                # partly; small independent per-tissue jitter on top.
                jit = rng.normal(0.0, 0.03 * sv, 3)
                tissue_scale[m] = {"gm": float(np.exp(c + jit[0])), "wm": float(np.exp(jit[1])),
                                   "csf": float(np.exp(0.5 * c + jit[2]))}
                gam[m] = 1.0 if m == "adc" else float(gamma[m][k])
                gain[m] = float(np.exp(rng.normal(0.0, 0.05 if m == "adc" else 0.3 * sv)))
                nz[m] = float(noise[m][k])
                thick = m in ("FLAIR", "T2starw", "dwi", "adc")
                fwhm[m] = (float(inplane_fwhm[k]),) * 2 + (
                    (float(slice_fwhm[k]),) if thick else (float(inplane_fwhm[k]),))
            else:
                tissue_scale[m] = {"gm": float(np.exp(rng.normal(0.0, 0.03 * sv))), "wm": 1.0, "csf": 1.0}
                gam[m] = 1.0
                gain[m] = float(np.exp(rng.normal(0.0, 0.08 * sv)))
                nz[m] = float(rng.uniform(0.03, 0.07) * nv)
                fwhm[m] = (float(pet_fwhm[m][k]),) * 3
        coeffs = rng.normal(0.0, 1.0, 9)
        sites.append(ScannerModel(
            name=f"site-{k + 1}", tissue_scale=tissue_scale, gamma=gam, gain=gain, noise=nz,
            fwhm_mm=fwhm, bias_amplitude=float(bias_amp[k]), bias_coeffs=[float(c) for c in coeffs],
        ))
    return sites


_LEGENDRE = (lambda t: np.ones_like(t), lambda t: t, lambda t: 1.5 * t * t - 0.5)
_BIAS_TERMS = [(i, j, k) for i in range(3) for j in range(3) for k in range(3) if 0 < i + j + k <= 2]


def bias_field(shape: tuple[int, int, int], coeffs: np.ndarray, amplitude: float,
               mask: np.ndarray | None = None) -> np.ndarray:
    """Multiplicative bias field: ``exp`` of a 2nd-order Legendre sum over the field of
    view, scaled so that its largest |log| over the grid equals ``amplitude``.

    Returns:
        float32 (X, Y, Z), or only the values at ``mask`` (N,) when a mask is given (the
        scanner model needs the field inside the brain only).
    """
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    # The largest |log| of a polynomial this smooth sits on the grid; find it on a
    # coarse copy of the grid (every 4th voxel) to keep this cheap.
    coarse = [a[::4] if len(a) > 8 else a for a in axes]
    fine_idx = np.nonzero(mask) if mask is not None else None

    def evaluate(ax, points=None):
        out = 0.0
        for c, (i, j, k) in zip(coeffs, _BIAS_TERMS):
            if points is None:
                term = (_LEGENDRE[i](ax[0])[:, None, None] * _LEGENDRE[j](ax[1])[None, :, None]
                        * _LEGENDRE[k](ax[2])[None, None, :])
            else:
                term = (_LEGENDRE[i](ax[0])[points[0]] * _LEGENDRE[j](ax[1])[points[1]]
                        * _LEGENDRE[k](ax[2])[points[2]])
            out = out + np.float32(c) * term
        return np.asarray(out, np.float32)

    peak = float(np.abs(evaluate(coarse)).max())
    log_field = evaluate(axes, fine_idx)
    return np.exp(log_field * np.float32(amplitude / max(peak, 1e-6))).astype(np.float32)


@dataclass
class SubjectScan:
    """One subject's draw of its site's scanner (what ``apply_scanner`` needs)."""

    bias_coeffs: np.ndarray
    bias_amplitude: float
    noise_scale: float
    gain_scale: float

    def to_json(self) -> dict:
        return {"bias_coeffs": [round(float(c), 4) for c in self.bias_coeffs],
                "bias_amplitude": round(self.bias_amplitude, 4),
                "noise_scale": round(self.noise_scale, 4), "gain_scale": round(self.gain_scale, 4)}


def draw_subject_scan(rng: np.random.Generator, site: ScannerModel) -> SubjectScan:
    """Jitter the site's bias shape, noise and gain for one session."""
    coeffs = np.asarray(site.bias_coeffs) + rng.normal(0.0, 0.4, 9)
    return SubjectScan(
        bias_coeffs=coeffs,
        bias_amplitude=float(site.bias_amplitude * np.exp(rng.normal(0.0, 0.2))),
        noise_scale=float(np.exp(rng.normal(0.0, 0.15))),
        gain_scale=float(np.exp(rng.normal(0.0, 0.05))),
    )


def apply_scanner(
    image: np.ndarray, modality: str, brain_mask: np.ndarray, spacing_mm: float,
    site: ScannerModel, scan: SubjectScan, rng: np.random.Generator,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """Acquire an ideal image on a scanner: blur → response curve → bias → noise → mask.

    Args:
        image: ideal float32 (X, Y, Z) in reference units (white matter ≈ ``TISSUE_MEANS``).
        bias: this subject's :func:`bias_field` at the ``brain_mask`` voxels (N,), shared
            by its MRI series.
    Returns:
        float32 (X, Y, Z) in scanner units, 0 outside ``brain_mask``.
    """
    fwhm = np.asarray(site.fwhm_mm[modality], dtype=float)
    sigma_vox = np.sqrt(np.clip(fwhm**2 - spacing_mm**2, 0.0, None)) / 2.355 / spacing_mm
    sigma_vox = np.where(sigma_vox > 0.2, sigma_vox, 0.0)
    ref = TISSUE_MEANS[modality]["wm"]
    gain = np.float32(site.gain[modality] * scan.gain_scale * UNIT_SCALE[modality])
    sd = np.float32(site.noise[modality] * scan.noise_scale * ref)
    inside = brain_mask
    if modality not in MRI_MODALITIES:
        # PET: reconstruction smooths the counting noise, so the noise is spatially
        # correlated — add it before the point-spread blur (×3 makes up for the smoothing).
        noisy = image.copy()
        noisy[inside] += (3.0 * sd) * rng.standard_normal(int(inside.sum()), dtype=np.float32)
        img = ndi.gaussian_filter(noisy, sigma_vox, truncate=3.0) if sigma_vox.any() else noisy
        out = np.maximum(img, 0.0) * gain * inside
        return out.astype(np.float32, copy=False)
    img = ndi.gaussian_filter(image, sigma_vox, truncate=3.0) if sigma_vox.any() else image
    vals = img[inside].astype(np.float32)
    if site.gamma[modality] != 1.0:
        vals = np.float32(ref) * np.power(np.maximum(vals / np.float32(ref), 0.0), np.float32(site.gamma[modality]))
    if bias is not None and modality != "adc":
        vals *= bias  # ADC is a ratio of two DWIs: the receive bias cancels
    if modality == "adc":
        vals = np.maximum(vals + (sd * 1.5) * rng.standard_normal(vals.shape, dtype=np.float32), 0.0)
    else:  # magnitude images: Rician noise
        re = vals + sd * rng.standard_normal(vals.shape, dtype=np.float32)
        im = sd * rng.standard_normal(vals.shape, dtype=np.float32)
        vals = np.sqrt(re * re + im * im)
    out = np.zeros(image.shape, np.float32)
    out[inside] = vals * gain
    return out
