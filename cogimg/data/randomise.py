"""Domain-randomised stroke training images, generated on the fly from label maps (SynthStroke).

Following SynthSeg (Billot et al., Medical Image Analysis 86:102789, 2023) and SynthStroke
(Chalcroft et al., MELBA 2025), a training subject's images are thrown away and redrawn from
its label maps at every draw: tissue classes (the cohort's ``desc-tissue_dseg`` derivative,
key ``truth_tissue_dseg``: 1 CSF, 2 GM, 3 WM) plus the lesion mask, so the network never sees
the synthetic cohort's own contrast, resolution or noise twice and must rely on what holds on
real scans. :class:`SynthStroke` draws, per subject and channel:

1. **labels** (:mod:`cogimg.data.label_maps`): 0 background, 1 CSF, 2 GM, 3 WM, 4 lesion and,
   with probability ``p_skull``, skull and scalp shells (5, 6), otherwise a bare skull-stripped
   brain; with probability ``p_sulci`` a **folded cortex** (:func:`add_sulci`); then the
   **lesion mimics** (:func:`add_mimics`, each kind with probability ``p_mimics``: 9, large
   left-right symmetric regions; 7, small blobs; 8, patches of the brain's outer rim) and, with
   probability ``p_emboli``, an **embolic shower** of ``emboli`` small lesions joining the
   lesion mask the network is trained on (:func:`add_emboli`). An acute lesion is bright on
   DWI, dark on ADC and one-sided, so a network must read both channels and the context;
2. **intensities**: a Gaussian mixture per label (``tio.LabelsToImage``, the generator of
   ``tio.RandomLabelsToImage``), means drawn from physically plausible ranges per channel
   with the constraints that keep the task learnable — the lesion mean is
   ``max(GM, WM) · (1 + m)`` on DWI with ``m ~ U(dwi_margin)`` and ``min(GM, WM) · (1 - m)``
   on ADC with ``m ~ U(adc_margin)`` (a negative margin draws raised lesion ADC: pseudo-
   normalised lesions and small ones diluted by CSF; the lesion stays bright on DWI); FLAIR
   (when a channel) is mildly bright (``max · U(1.0, 1.3)``). Mimics: DWI ``max · U(1.1, 2.4)``
   (symmetric regions), as the lesion (blobs) or ``max · U(1.0, 1.8)`` (rim); ADC ``min · U(0.75, 1.3)``
   (regions), ``max · U(1.0, 1.6)`` (blobs) or ``GM · U(0.95, 1.4)`` (rim). ADC means are
   in 10⁻⁶ mm²/s, then with probability 0.5 expressed in 10⁻³ mm²/s (both units occur in
   real data);
3. **acquisition**: with probability ``p_skull_base`` a bright skull base on DWI
   (:func:`skull_base_gain`: EPI susceptibility pile-up, ADC untouched), partial-volume blur
   (``tio.RandomBlur``), thick slices
   (``tio.RandomAnisotropy`` along the last axis: resample down by 2–3× then back up, i.e.
   4–6 mm slices on a 2 mm grid), bias field, Rician-like noise (more on ADC where
   ``adc_noise`` asks), motion and ghosting (TorchIO transforms);
4. **normalisation** as the real-scan preprocessing does it (``foreground="head"``,
   :mod:`cogimg.data.real_scan`): head mask from the DWI channel, percentile clip and
   z-score inside it.

Every random number comes from torch's global generator (the mimics' NumPy generator is
seeded from it), which the datamodule seeds per subject (:mod:`cogimg.data.sampling`), so a
draw is reproducible. Spatial augmentation (flip,
affine) runs on the labels before the images are drawn (:func:`randomisation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from cogimg.data.augmentation import RandomBiasFieldSeparable
from cogimg.data.label_maps import (
    BACKGROUND,
    BRAIN_LABELS,
    CSF,
    GM,
    LESION,
    MIMIC,
    MIMIC_KINDS,
    REGION,
    RIM,
    SCALP,
    SHELL,
    WM,
    add_emboli,
    add_mimics,
    add_sulci,
    check_mimic_kinds,
    label_map,
    smooth_noise,
)
from cogimg.data.real_scan import head_mask, normalise_in_mask

TISSUE_KEY = "truth_tissue_dseg"
#: Mean ranges per channel and label (DWI: relative units; ADC: 10⁻⁶ mm²/s; FLAIR: relative).
MEAN_RANGES: dict[str, dict[int, tuple[float, float]]] = {
    "dwi": {BACKGROUND: (0.0, 0.05), CSF: (0.05, 0.8), GM: (0.8, 1.4), WM: (0.7, 1.2),
            SHELL: (0.0, 0.4), SCALP: (0.1, 1.3)},
    "adc": {BACKGROUND: (0.0, 50.0), CSF: (1800.0, 3400.0), GM: (700.0, 1050.0),
            WM: (600.0, 900.0), SHELL: (0.0, 1500.0), SCALP: (0.0, 1500.0)},
    "FLAIR": {BACKGROUND: (0.0, 0.05), CSF: (0.02, 0.4), GM: (0.8, 1.3), WM: (0.6, 1.1),
              SHELL: (0.0, 0.4), SCALP: (0.2, 1.5)},
}


def _uniform(low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand(1).item())


def skull_base_gain(brain: np.ndarray, si_axis: int, superior_first: bool,
                    rng: np.random.Generator) -> np.ndarray:
    """Multiplicative DWI gain (X, Y, Z), float32 ≥ 1: the EPI susceptibility pile-up that makes
    the skull base (inferior temporal lobes, cerebellum) bright on real DWI, with normal ADC.
    Along the superior-inferior voxel axis ``si_axis`` (``superior_first``: index 0 is the
    superior end) a sigmoid rises from 1 above a level at 15–45 % of the brain's height (``brain``
    bool mask) to ``1 + a`` below it, ``a ~ U(0.3, 1.2)``, over 3–10 % of the height, and is
    modulated by smooth noise (σ 3–8 voxels) so that the brightening is patchy."""
    others = tuple(axis for axis in range(3) if axis != si_axis)
    rows = np.flatnonzero(brain.any(axis=others))
    if not len(rows):
        return np.ones(brain.shape, np.float32)
    height = (np.arange(brain.shape[si_axis]) - rows[0]) / max(rows[-1] - rows[0], 1)
    if superior_first:
        height = 1.0 - height
    level, width, amplitude = rng.uniform(0.15, 0.45), rng.uniform(0.03, 0.1), rng.uniform(0.3, 1.2)
    profile = amplitude / (1.0 + np.exp((height - level) / width))
    shape = [1, 1, 1]
    shape[si_axis] = -1
    patches = np.clip(1.0 + 0.5 * smooth_noise(brain.shape, rng.uniform(3.0, 8.0), rng, coarse=2),
                      0.0, None)
    return (1.0 + profile.reshape(shape) * patches).astype(np.float32)


def draw_means(channel: str, dwi_margin: tuple[float, float],
               adc_margin: tuple[float, float]) -> dict[int, float]:
    """Mean intensity per label for one channel, with the lesion and mimic constraints
    (module docstring, step 2) applied."""
    ranges = MEAN_RANGES[channel]
    means = {label: _uniform(*ranges[label]) for label in sorted(ranges)}
    brighter, darker = max(means[GM], means[WM]), min(means[GM], means[WM])
    if channel == "dwi":
        means[LESION] = brighter * (1.0 + _uniform(*dwi_margin))
        means[MIMIC] = brighter * (1.0 + _uniform(*dwi_margin))
        means[RIM] = brighter * _uniform(1.0, 1.8)
        means[REGION] = brighter * _uniform(1.1, 2.4)
    elif channel == "adc":
        means[LESION] = darker * (1.0 - _uniform(*adc_margin))
        means[MIMIC] = brighter * _uniform(1.0, 1.6)
        means[RIM] = means[GM] * _uniform(0.95, 1.4)
        means[REGION] = darker * _uniform(0.75, 1.3)
    else:
        means[LESION] = brighter * _uniform(1.0, 1.3)
        means[MIMIC] = brighter * _uniform(1.0, 1.5)
        means[RIM] = means[GM] * _uniform(0.9, 1.2)
        means[REGION] = brighter * _uniform(0.95, 1.2)
    return means


class SynthStroke(tio.Transform):
    """Redraw a subject's ``channels`` from its tissue and lesion label maps (module docstring).

    Args:
        channels: image keys to generate (``dwi``, ``adc``, ``FLAIR``), model channel order.
        lesion_key: label map of the lesion (e.g. ``lesions_msk``); kept in the subject.
        tissue_key: tissue label map (removed from the subject after use).
        dwi_margin / adc_margin: ranges of the relative lesion margin on DWI (brighter) and
            ADC (darker) against the brighter/darker of GM and WM.
        p_skull: probability of adding skull/scalp shells.
        p_mimics: probability of each kind of lesion mimic (:func:`add_mimics`); 0 = none.
        mimic_kinds: the kinds of mimic drawn (some of :data:`MIMIC_KINDS`).
        p_emboli / emboli: probability of an embolic shower and its range of lesion counts
            (:func:`add_emboli`); added to the subject's lesion mask. 0 = none.
        p_skull_base: probability of a bright skull base on DWI (:func:`skull_base_gain`).
        p_sulci: probability of folding the cortex (:func:`add_sulci`) before the mimics.
        adc_noise: range of extra noise on ADC alone (same units as the common noise): ADC
            is a log ratio of DWI images and so noisier than they are; ``(0, 0)`` = none.
        slice_downsampling: ``tio.RandomAnisotropy`` range along the last axis.
        clip_percentiles: the final clip (the preset's), ``None`` = none.
    """

    def __init__(self, channels: Sequence[str] = ("dwi", "adc"), lesion_key: str = "lesions_msk",
                 tissue_key: str = TISSUE_KEY, dwi_margin: tuple[float, float] = (0.25, 1.5),
                 adc_margin: tuple[float, float] = (0.15, 0.55), p_skull: float = 0.5,
                 p_mimics: float = 0.7, mimic_kinds: Sequence[str] = MIMIC_KINDS,
                 p_emboli: float = 0.0, emboli: tuple[int, int] = (3, 40),
                 p_skull_base: float = 0.0, p_sulci: float = 0.0,
                 adc_noise: tuple[float, float] = (0.0, 0.0),
                 slice_downsampling: tuple[float, float] = (2.0, 3.0),
                 clip_percentiles: tuple[float, float] | None = (0.5, 99.5), **kwargs):
        super().__init__(**kwargs)
        unknown = [c for c in channels if c not in MEAN_RANGES]
        if unknown:
            raise ValueError(f"SynthStroke cannot draw channel(s) {unknown}; it draws "
                             f"{sorted(MEAN_RANGES)}")
        if "dwi" not in channels:
            raise ValueError("SynthStroke needs a 'dwi' channel (its head mask normalises all)")
        self.channels, self.lesion_key, self.tissue_key = tuple(channels), lesion_key, tissue_key
        self.dwi_margin, self.adc_margin = tuple(dwi_margin), tuple(adc_margin)
        self.p_skull, self.p_mimics, self.adc_noise = p_skull, p_mimics, tuple(adc_noise)
        check_mimic_kinds(mimic_kinds)
        self.mimic_kinds = tuple(mimic_kinds)
        self.p_emboli, self.emboli, self.p_skull_base = p_emboli, tuple(emboli), p_skull_base
        self.p_sulci = p_sulci
        self.slice_downsampling = tuple(slice_downsampling)
        self.clip_percentiles = clip_percentiles
        self.args_names = ["channels", "lesion_key", "tissue_key", "dwi_margin", "adc_margin",
                           "p_skull", "p_mimics", "mimic_kinds", "p_emboli", "emboli",
                           "p_skull_base", "p_sulci", "adc_noise", "slice_downsampling",
                           "clip_percentiles"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        sid = subject.get("subject_id")
        for key in (self.tissue_key, self.lesion_key):
            if key not in subject:
                raise KeyError(f"subject {sid!r} has no {key!r} label map; domain randomisation "
                               "needs the cohort's tissue classes (regenerate it with this "
                               "cogimg: derivatives/truth/*_desc-tissue_dseg.nii.gz)")
        tissue = subject[self.tissue_key].data[0].numpy()
        affine = subject[self.tissue_key].affine
        images, lesion = self.draw(tissue, subject[self.lesion_key].data[0].numpy(), affine)
        target = subject[self.lesion_key]
        target.set_data(torch.from_numpy(lesion[None]).to(target.data.dtype))
        mask = torch.from_numpy(head_mask(images[self.channels.index("dwi")]))
        if not bool(mask.any()):
            mask = torch.from_numpy(tissue > 0)
        images = normalise_in_mask(images, mask, self.clip_percentiles)
        for k, channel in enumerate(self.channels):
            image = tio.ScalarImage(tensor=images[k:k + 1], affine=affine)
            if channel in subject:
                subject.remove_image(channel)
            subject.add_image(image, channel)
        subject.remove_image(self.tissue_key)
        return subject

    def draw(self, tissue: np.ndarray, lesion: np.ndarray, affine: np.ndarray
             ) -> tuple[torch.Tensor, np.ndarray]:
        """Steps 1–3 of the module docstring, from the tissue and lesion label maps (X, Y, Z)
        of one subject on the grid ``affine``: ``channels`` images (C, X, Y, Z) in scanner
        units (ADC in 10⁻⁶ or 10⁻³ mm²/s), not yet normalised, and the lesion mask (X, Y, Z)
        bool they show (``lesion`` plus any emboli)."""
        labels = label_map(tissue, lesion, skull=bool(torch.rand(1).item() < self.p_skull))
        codes = nib.aff2axcodes(affine)
        lr_axis = next(i for i, code in enumerate(codes) if code in "LR")
        rng = np.random.default_rng(int(torch.randint(2**31, (1,)).item()))
        spacing = nib.affines.voxel_sizes(affine)
        if self.p_sulci > 0:  # no draw at all when off: the other recipes' streams stay the same
            add_sulci(labels, self.p_sulci, rng, spacing)
        add_mimics(labels, self.p_mimics, rng, lr_axis, self.mimic_kinds)
        add_emboli(labels, self.p_emboli, self.emboli, rng, spacing)
        work = tio.Subject(labels=tio.LabelMap(tensor=torch.from_numpy(labels)[None], affine=affine))
        for channel in self.channels:
            means = draw_means(channel, self.dwi_margin, self.adc_margin)
            present = np.unique(labels).tolist()  # LabelsToImage: one value per present label
            mean = [means[k] for k in present]
            std = [abs(means[k]) * _uniform(0.02, 0.12) for k in present]
            work = tio.LabelsToImage(label_key="labels", image_key=channel, mean=mean, std=std,
                                     copy=False)(work)
        work.remove_image("labels")
        if self.p_skull_base > 0 and rng.random() < self.p_skull_base:
            si_axis = next(i for i, code in enumerate(codes) if code in "SI")
            gain = skull_base_gain(np.isin(labels, BRAIN_LABELS), si_axis, codes[si_axis] == "I",
                                   rng)
            work["dwi"].set_data(work["dwi"].data * torch.from_numpy(gain)[None])
        work = self.acquisition()(work)
        images = torch.cat([work[c].data.float() for c in self.channels])
        if "adc" in self.channels and torch.rand(1).item() < 0.5:  # 10⁻³ mm²/s instead of 10⁻⁶
            images[self.channels.index("adc")] /= 1000.0
        return images, (lesion > 0) | (labels == LESION)

    def acquisition(self) -> tio.Compose:
        """Partial volume, thick slices, bias, noise, motion, ghosting (on images)."""
        adc_noise = ([_RelativeNoise(std=self.adc_noise, include=["adc"])]
                     if "adc" in self.channels and max(self.adc_noise) > 0 else [])
        return tio.Compose([
            tio.RandomBlur(std=(0.0, 1.5)),
            tio.RandomAnisotropy(axes=(2,), downsampling=self.slice_downsampling, p=0.7),
            RandomBiasFieldSeparable(coefficients=0.5, p=0.7),
            _RelativeNoise(std=(0.0, 0.12), p=0.9),
            *adc_noise,
            tio.RandomMotion(degrees=5.0, translation=5.0, num_transforms=2, p=0.15),
            tio.RandomGhosting(num_ghosts=(2, 6), intensity=(0.2, 0.6), p=0.15),
        ])


class _RelativeNoise(tio.RandomNoise):
    """``tio.RandomNoise`` with ``std`` as a fraction of each image's 99th percentile, then
    magnitude (``|x|``: Rician-like floor in the background); channels in different units
    get comparable noise."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        mean, std, seed = self.get_params(self.mean_range, self.std_range)
        for image in self.get_images(subject):
            scale = float(torch.quantile(image.data.float().flatten()[::7], 0.99).clamp_min(1e-6))
            noise = torch.randn(image.data.shape, generator=torch.Generator().manual_seed(seed))
            image.set_data((image.data + (mean + std * noise) * scale).abs())
        return subject


#: Randomisation recipes selectable by name (``PatchDataModule(randomise=...)``): the
#: :class:`SynthStroke` arguments that differ from its defaults.
#: ``synthstroke_subacute`` widens the lesion's ADC margin down to 0 (ADC as low as its tissue's):
#: DWI-defined lesions whose ADC has pseudo-normalised (subacute lesions, which ISLES'22 includes)
#: or is diluted by partial volume in small lesions; the default's margin cannot draw them.
#: ``synthstroke_calibrated`` also draws fainter DWI lesions and noisier ADC, so that the draws'
#: lesion contrast and noise overlap those measured on real scans
#: (``benchmarks/sim2real_calibration.py`` prints both side by side).
#: ``synthstroke_embolic`` is the subacute recipe with an embolic shower in half the draws:
#: dozens of small lesions, as in the real case, where the cohort has one to a few large ones
#: (the calibration benchmark's lesion component counts).
#: ``synthstroke_dwi`` draws DWI-defined lesions: ADC from half the darker tissue's to 1.45
#: times it (``adc_margin`` down to -0.45), fainter DWI lesions, some extra ADC noise, embolic
#: showers in half the draws and no ``"blob"`` mimics — which are labelled background for being
#: bright on DWI with normal ADC, what small lesions look like when partial volume with CSF
#: and tissue dilutes their ADC (the calibration benchmark's lesion ADC contrast of the real
#: case lies above the other recipes' ranges). ``synthstroke_dwi_blobs`` keeps the blob mimics.
#: ``synthstroke_embolic_noblobs``: the embolic recipe without blob mimics;
#: ``synthstroke_embolic_raisedadc``: that with the DWI-defined recipe's lesion ADC range;
#: ``synthstroke_embolic_skullbase`` / ``synthstroke_embolic_noblobs_skullbase``: the embolic
#: recipe with / without blob mimics and a bright skull base on DWI in half the draws.
#: ``synthstroke_embolic_sulci`` / ``synthstroke_dwi_sulci``: the embolic / DWI-defined recipe
#: with a folded cortex (:func:`add_sulci`) in 80 % of the draws;
#: ``synthstroke_dwi_sulci_skullbase`` / ``synthstroke_dwi_sulci_blobs``: that DWI-defined
#: recipe with a bright skull base / with the blob mimics too.
_NO_BLOBS = ("region", "rim")
_SUBACUTE = {"adc_margin": (0.0, 0.55)}
_EMBOLIC = {**_SUBACUTE, "p_emboli": 0.5}
_DWI_DEFINED = {"adc_margin": (-0.45, 0.5), "dwi_margin": (0.1, 1.0), "adc_noise": (0.0, 0.15),
                "p_emboli": 0.5, "mimic_kinds": _NO_BLOBS}
RECIPES: dict[str, dict] = {
    "synthstroke": {},
    "synthstroke_nomimics": {"p_mimics": 0.0},
    "synthstroke_subacute": _SUBACUTE,
    "synthstroke_calibrated": {**_SUBACUTE, "dwi_margin": (0.05, 1.2), "adc_noise": (0.05, 0.2)},
    "synthstroke_embolic": _EMBOLIC,
    "synthstroke_embolic_noblobs": {**_EMBOLIC, "mimic_kinds": _NO_BLOBS},
    "synthstroke_embolic_raisedadc": {**_EMBOLIC, "mimic_kinds": _NO_BLOBS,
                                      "adc_margin": _DWI_DEFINED["adc_margin"]},
    "synthstroke_embolic_skullbase": {**_EMBOLIC, "p_skull_base": 0.5},
    "synthstroke_embolic_noblobs_skullbase": {**_EMBOLIC, "mimic_kinds": _NO_BLOBS,
                                              "p_skull_base": 0.5},
    "synthstroke_embolic_sulci": {**_EMBOLIC, "p_sulci": 0.8},
    "synthstroke_dwi": _DWI_DEFINED,
    "synthstroke_dwi_sulci": {**_DWI_DEFINED, "p_sulci": 0.8},
    "synthstroke_dwi_sulci_skullbase": {**_DWI_DEFINED, "p_sulci": 0.8, "p_skull_base": 0.5},
    "synthstroke_dwi_sulci_blobs": {**_DWI_DEFINED, "p_sulci": 0.8, "mimic_kinds": MIMIC_KINDS},
    "synthstroke_dwi_blobs": {**_DWI_DEFINED, "mimic_kinds": MIMIC_KINDS},
}


def randomisation(name: str, channels: Sequence[str], lesion_key: str,
                  clip_percentiles: tuple[float, float] | None = (0.5, 99.5)) -> tio.Compose:
    """The training transform of recipe ``name`` (one of :data:`RECIPES`): flip and affine on
    the labels, then :class:`SynthStroke` with the recipe's arguments."""
    if name not in RECIPES:
        raise ValueError(f"unknown randomisation recipe {name!r}; expected one of {sorted(RECIPES)}")
    return tio.Compose([
        tio.RandomFlip(axes=("LR",), flip_probability=0.5),
        tio.RandomAffine(scales=0.1, degrees=10.0, p=0.5),
        SynthStroke(channels, lesion_key=lesion_key, clip_percentiles=clip_percentiles,
                    **RECIPES[name]),
    ])
