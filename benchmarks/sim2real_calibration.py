"""How the synthetic stroke cohort differs from a real acute stroke scan (issue 30, part 1).

Measures the same statistics on the real ISLES'22 case(s), on a synthetic stroke cohort and
on images drawn by each domain-randomisation recipe (``--recipes``) from that cohort's label
maps before normalisation (brain = the tissue map), prints them side by side and writes
``results/sim2real_calibration.json``:

- **tissue intensities** per channel (DWI, ADC; FLAIR where present): 5/25/50/75/95th
  percentiles of CSF, normal parenchyma and lesion, each divided by the median of normal
  parenchyma (so scanner units cancel). Tissue comes from one simple rule applied to every
  scan alike (no atlas): brain = non-zero voxels (the scans are skull-stripped), CSF = ADC
  above 1700 × 10⁻⁶ mm²/s, parenchyma = the rest of the brain outside the lesion dilated by
  one voxel, lesion = the expert/ground-truth mask;
- **lesion contrast**: median lesion intensity / median intensity of the mirrored
  (contralateral) lesion region's parenchyma, per channel;
- **noise and smoothness** in parenchyma: noise = 1.4826 · MAD of ``x - gaussian(x, 1 voxel)``
  over the parenchyma median; roughness = mean |neighbour difference| / SD (as
  :mod:`cogimg.data.ood`);
- **ADC units**: parenchyma median ADC in the file's own units and the unit inferred from it;
- **outer CSF share**: the share of the brain's outer 10 mm (Euclidean depth from its surface,
  in mm) that is CSF by the rule above: sulcal and subarachnoid CSF, which the template-based
  cohort lacks and ageing widens;
- **geometry**: voxel spacing (mm) and slice thickness;
- **lesion sizes**: total lesion volume (mL) and component count (26-connectivity) per scan,
  for the SOOP masks (a seeded sample), the synthetic cohort and the real case(s);
- **voxel-rule ceiling**: how separable the lesion is by intensity alone — the best Dice over
  every rule "DWI above k and ADC below t" (both relative to the parenchyma median;
  k = 1.05–3.0, t = 0.5–1.2 or no ADC limit) inside the brain, the thresholds chosen on the
  scan's own truth (an oracle: an upper bound for such rules, not a method).

Usage::

    python benchmarks/sim2real_calibration.py --synth DATA/synth_stroke [--isles ../shared/data/isles22]
        [--soop ../shared/data/soop_masks] [--soop-sample 150] [--recipes R ...] [--draws 20]
        [--out results/sim2real_calibration.json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from cogimg.data.label_maps import mirrored
from cogimg.data.randomise import RECIPES, SynthStroke

PERCENTILES = (5, 25, 50, 75, 95)
CSF_ADC_E6 = 1700.0
CHANNELS = ("dwi", "adc", "FLAIR")


def adc_scale_to_e6(adc_brain: np.ndarray) -> tuple[float, str]:
    """Factor bringing ADC to 10⁻⁶ mm²/s and the unit the values are in (from their median)."""
    median = float(np.median(adc_brain))
    if median < 0.05:
        return 1e6, "mm2/s"
    if median < 20.0:
        return 1e3, "1e-3 mm2/s"
    return 1.0, "1e-6 mm2/s"


def tissue_masks(images: dict[str, np.ndarray], lesion: np.ndarray,
                 brain: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``brain``, ``csf``, ``parenchyma`` and ``lesion`` bool masks (X, Y, Z) of one scan;
    ``brain`` defaults to the non-zero voxels (skull-stripped scans)."""
    if brain is None:
        brain = (images["dwi"] != 0) & (images["adc"] != 0)
    scale, _ = adc_scale_to_e6(images["adc"][brain])
    csf = brain & (images["adc"] * scale > CSF_ADC_E6) & ~lesion
    near_lesion = ndimage.binary_dilation(lesion, iterations=1)
    parenchyma = brain & ~csf & ~near_lesion
    return {"brain": brain, "csf": csf, "parenchyma": parenchyma, "lesion": lesion & brain}


OUTER_BAND_MM = 10.0


def outer_csf_share(masks: dict[str, np.ndarray], zooms) -> float:
    """Share of the brain's voxels within ``OUTER_BAND_MM`` of its surface that are CSF."""
    depth = ndimage.distance_transform_edt(masks["brain"], sampling=[float(z) for z in zooms[:3]])
    band = masks["brain"] & (depth <= OUTER_BAND_MM)
    return float(masks["csf"][band].sum() / max(int(band.sum()), 1))


def noise_and_roughness(image: np.ndarray, region: np.ndarray) -> dict[str, float]:
    reference = float(np.median(image[region]))
    residual = image - ndimage.gaussian_filter(image, 1.0)
    noise = 1.4826 * float(np.median(np.abs(residual[region] - np.median(residual[region]))))
    diffs = []
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        both = region[tuple(a)] & region[tuple(b)]
        diffs.append(np.abs(image[tuple(a)] - image[tuple(b)])[both])
    roughness = float(np.concatenate(diffs).mean() / max(image[region].std(), 1e-9))
    return {"noise_rel": noise / max(reference, 1e-9), "roughness": roughness}


def scan_statistics(images: dict[str, np.ndarray], lesion: np.ndarray,
                    zooms: tuple[float, ...], brain: np.ndarray | None = None) -> dict:
    """Every statistic of the module docstring for one scan (images on one grid)."""
    masks = tissue_masks(images, lesion, brain)
    # the lesion reflected across the brain's left-right midline (first voxel axis)
    contra = mirrored(masks["lesion"], 0, ndimage.center_of_mass(masks["brain"])[0]) & masks["parenchyma"]
    scale, unit = adc_scale_to_e6(images["adc"][masks["brain"]])
    out: dict = {"spacing_mm": [round(float(z), 3) for z in zooms[:3]],
                 "slice_thickness_mm": round(float(max(zooms[:3])), 3),
                 "adc_unit": unit,
                 "adc_parenchyma_median_e6": float(np.median(images["adc"][masks["parenchyma"]]) * scale),
                 "adc_csf_median_e6": (float(np.median(images["adc"][masks["csf"]]) * scale)
                                       if masks["csf"].any() else None),
                 "outer_csf_share": outer_csf_share(masks, zooms),
                 "channels": {}}
    for channel, image in images.items():
        reference = float(np.median(image[masks["parenchyma"]]))
        entry: dict = {"tissue_quantiles": {}}
        for tissue in ("csf", "parenchyma", "lesion"):
            values = image[masks[tissue]] / reference
            entry["tissue_quantiles"][tissue] = (
                [round(float(v), 3) for v in np.percentile(values, PERCENTILES)] if values.size else None)
        if masks["lesion"].any() and contra.sum() >= 5:
            entry["lesion_contrast"] = float(np.median(image[masks["lesion"]]) / np.median(image[contra]))
        else:
            entry["lesion_contrast"] = None
        entry.update(noise_and_roughness(image, masks["parenchyma"]))
        out["channels"][channel] = entry
    out.update(lesion_sizes(lesion, zooms))
    out["voxel_rule_ceiling"] = voxel_rule_ceiling(images, masks)
    return out


def voxel_rule_ceiling(images: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict:
    """Best Dice of "DWI/parenchyma > k and ADC/parenchyma < t" in the brain, over a grid of
    (k, t) chosen on the truth (module docstring), with the chosen k and t."""
    brain, lesion = masks["brain"], masks["lesion"]
    dwi = images["dwi"][brain] / np.median(images["dwi"][masks["parenchyma"]])
    adc = images["adc"][brain] / np.median(images["adc"][masks["parenchyma"]])
    truth, n_truth = lesion[brain], int(lesion.sum())
    best = {"dice": 0.0, "dwi_above": None, "adc_below": None}
    for t in [*np.round(np.arange(0.5, 1.201, 0.05), 2), np.inf]:
        for k in np.round(np.arange(1.05, 3.001, 0.05), 2):
            rule = (dwi > k) & (adc < t)
            dice = 2.0 * float((rule & truth).sum()) / max(int(rule.sum()) + n_truth, 1)
            if dice > best["dice"]:
                best = {"dice": dice, "dwi_above": float(k), "adc_below": float(t)}
    return best


def lesion_sizes(lesion: np.ndarray, zooms) -> dict:
    voxel_ml = float(np.prod(zooms[:3])) / 1000.0
    _, count = ndimage.label(lesion, structure=np.ones((3, 3, 3)))
    return {"lesion_volume_ml": float(lesion.sum() * voxel_ml), "lesion_components": int(count)}


def _load(path: Path) -> tuple[np.ndarray, tuple]:
    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), img.header.get_zooms()


def real_cases(root: Path) -> list[dict]:
    """Statistics of every ISLES'22-style case under ``root`` (DWI + ADC + derivative mask)."""
    cases = []
    for dwi_path in sorted(root.rglob("*_dwi.nii*")):
        if "derivatives" in dwi_path.parts:
            continue
        stem = dwi_path.name.split("_dwi.nii")[0]
        adc_path = next(dwi_path.parent.glob(f"{stem}_adc.nii*"), None)
        mask_path = next((root / "derivatives").rglob(f"{stem}_msk.nii*"), None)
        if adc_path is None or mask_path is None:
            continue
        dwi, zooms = _load(dwi_path)
        images = {"dwi": dwi, "adc": _load(adc_path)[0]}
        lesion = _load(mask_path)[0] > 0
        cases.append({"case": stem, **scan_statistics(images, lesion, zooms)})
    return cases


def lesion_mask_path(root: Path, pid: str) -> Path:
    """The lesion mask a synthetic cohort writes for subject ``pid``."""
    return root / "derivatives" / "lesions" / pid / "anat" / f"{pid}_msk.nii.gz"


def synthetic_cases(root: Path, limit: int) -> list[dict]:
    """Statistics of up to ``limit`` stroke subjects of a synthetic cohort."""
    cases = []
    for dwi_path in sorted(root.glob("sub-*/dwi/*_dwi.nii.gz"))[:limit]:
        pid = dwi_path.name.split("_dwi")[0]
        mask_path = lesion_mask_path(root, pid)
        if not mask_path.exists():
            continue
        dwi, zooms = _load(dwi_path)
        images = {"dwi": dwi, "adc": _load(dwi_path.with_name(f"{pid}_adc.nii.gz"))[0],
                  "FLAIR": _load(root / pid / "anat" / f"{pid}_FLAIR.nii.gz")[0]}
        cases.append({"case": pid, **scan_statistics(images, _load(mask_path)[0] > 0, zooms)})
    return cases


def randomised_cases(root: Path, recipe: str, draws: int) -> list[dict]:
    """Statistics of ``draws`` images drawn by randomisation ``recipe`` from the label maps of
    the synthetic cohort's stroke subjects (draw k: subject k mod n, ``torch`` seed k), before
    normalisation (:meth:`SynthStroke.draw`); brain = the tissue map's labels, lesion = the
    drawn lesion mask (the cohort's plus any emboli)."""
    generator = SynthStroke(("dwi", "adc"), **RECIPES[recipe])
    subjects = []
    for tissue_path in sorted((root / "derivatives" / "truth").glob("sub-*/*_desc-tissue_dseg.nii.gz")):
        pid = tissue_path.name.split("_desc-")[0]
        mask_path = lesion_mask_path(root, pid)
        if mask_path.exists():
            subjects.append((tissue_path, mask_path))
    if not subjects:
        raise SystemExit(f"{root}: no stroke subject with a tissue map and a lesion mask")
    cases = []
    for k in range(draws):
        tissue_path, mask_path = subjects[k % len(subjects)]
        tissue = nib.load(tissue_path)
        tissue_map = np.asarray(tissue.dataobj).astype(np.uint8)
        lesion = _load(mask_path)[0] > 0
        torch.manual_seed(k)
        images, drawn_lesion = generator.draw(tissue_map, lesion.astype(np.uint8), tissue.affine)
        images = images.numpy()
        cases.append({"case": f"{tissue_path.name.split('_desc-')[0]} draw {k}",
                      **scan_statistics({"dwi": images[0], "adc": images[1]}, drawn_lesion,
                                        tissue.header.get_zooms(), brain=tissue_map > 0)})
    return cases


def soop_sizes(root: Path, sample: int, seed: int = 0) -> list[dict]:
    paths = sorted((root / "lesions").glob("sub-*_lesion.nii.gz"))
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(sample, len(paths)), replace=False))
    out = []
    for k in chosen:
        data, zooms = _load(paths[k])
        out.append({"case": paths[k].name, **lesion_sizes(data > 0, zooms)})
    return out


def _summary(values: list[float | None]) -> list[float] | None:
    values = [v for v in values if v is not None]
    return [round(float(v), 3) for v in np.percentile(values, PERCENTILES)] if values else None


def summarise(cases: list[dict]) -> dict:
    """Per statistic, the 5/25/50/75/95th percentiles over ``cases``."""
    out: dict = {"n": len(cases)}
    for key in ("lesion_volume_ml", "lesion_components", "adc_parenchyma_median_e6",
                "adc_csf_median_e6", "outer_csf_share", "slice_thickness_mm"):
        if cases and key in cases[0]:
            out[key] = _summary([c[key] for c in cases])
    if cases and "voxel_rule_ceiling" in cases[0]:
        out["voxel_rule_ceiling_dice"] = _summary([c["voxel_rule_ceiling"]["dice"] for c in cases])
    channels = sorted({ch for c in cases for ch in c.get("channels", {})})
    for ch in channels:
        entries = [c["channels"][ch] for c in cases if ch in c.get("channels", {})]
        block = {stat: _summary([e[stat] for e in entries])
                 for stat in ("lesion_contrast", "noise_rel", "roughness")}
        for tissue in ("csf", "lesion"):
            block[f"{tissue}_median_rel"] = _summary(
                [e["tissue_quantiles"][tissue][2] if e["tissue_quantiles"][tissue] else None
                 for e in entries])
        out[ch] = block
    return out


def table(summaries: dict[str, dict]) -> str:
    """Side-by-side text table: one row per statistic, one column per source (medians)."""
    names = list(summaries)
    rows = [("n scans", [str(summaries[n]["n"]) for n in names])]

    def med(block, *keys):
        for key in keys:
            block = block.get(key) if isinstance(block, dict) else None
        return "-" if block is None else f"{block[2]:.3g} [{block[1]:.3g}, {block[3]:.3g}]"

    for key in ("lesion_volume_ml", "lesion_components", "adc_parenchyma_median_e6",
                "adc_csf_median_e6", "outer_csf_share", "slice_thickness_mm",
                "voxel_rule_ceiling_dice"):
        rows.append((key, [med(summaries[n], key) for n in names]))
    for ch in CHANNELS:
        for stat in ("lesion_contrast", "csf_median_rel", "lesion_median_rel", "noise_rel",
                     "roughness"):
            rows.append((f"{ch}:{stat}", [med(summaries[n], ch, stat) for n in names]))
    width = max(len(r[0]) for r in rows) + 2
    col = max(28, *(len(n) + 2 for n in names))
    lines = ["statistic".ljust(width) + "".join(n.ljust(col) for n in names)]
    lines.append("median [25th, 75th] over scans")
    lines += [r[0].ljust(width) + "".join(v.ljust(col) for v in r[1]) for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", type=Path, required=True, help="synthetic stroke cohort")
    parser.add_argument("--isles", type=Path, default=Path("../shared/data/isles22"))
    parser.add_argument("--soop", type=Path, default=Path("../shared/data/soop_masks"))
    parser.add_argument("--soop-sample", type=int, default=150)
    parser.add_argument("--synth-limit", type=int, default=40)
    parser.add_argument("--recipes", nargs="*", default=sorted(RECIPES),
                        help="randomisation recipes whose draws are measured too")
    parser.add_argument("--draws", type=int, default=20, help="images drawn per recipe")
    parser.add_argument("--out", type=Path, default=Path("results/sim2real_calibration.json"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    real = real_cases(args.isles)
    synth = synthetic_cases(args.synth, args.synth_limit)
    soop = soop_sizes(args.soop, args.soop_sample) if args.soop.is_dir() else []
    if not real or not synth:
        raise SystemExit(f"need real cases under {args.isles} and synthetic ones under {args.synth}")
    summaries = {"real (ISLES'22)": summarise(real), "synthetic": summarise(synth)}
    randomised = {recipe: randomised_cases(args.synth, recipe, args.draws) for recipe in args.recipes}
    summaries.update({f"randomised {recipe}": summarise(cases) for recipe, cases in randomised.items()})
    if soop:
        summaries["SOOP masks"] = summarise(soop)
    text = table(summaries)
    print(text)
    result = {"synthetic_cohort": str(args.synth), "summaries": summaries, "table": text.splitlines(),
              "details": {"real_cases": real, "synthetic_cases": synth,
                          "randomised_cases": randomised}}
    real, synth = (summaries[k] for k in ("real (ISLES'22)", "synthetic"))
    write_result(args.out.name.removesuffix(".json"), result, results_dir=args.out.parent,
                 headline={"voxel-rule Dice ceiling, real": real["voxel_rule_ceiling_dice"][2],
                           "voxel-rule Dice ceiling, synthetic (median)":
                               synth["voxel_rule_ceiling_dice"][2],
                           "outer CSF share, real": real["outer_csf_share"][2],
                           "outer CSF share, synthetic (median)": synth["outer_csf_share"][2]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
