"""A montage PNG of a synthetic cohort, for the README and for eyeballing a new design.

Rows: one subject per diagnosis (the most pronounced example, so the effect is visible),
columns: the seven modalities, with the ground truth drawn on top — atrophy on T1w,
lesion outlines on DWI/ADC/FLAIR, microbleeds and PD signal change on T2*, DAT loss on the
DAT channel. A last row shows one control's T1w per site and the sites' brain intensity
histograms, so scanner differences are visible. Reads only the written files, so it works
on any cohort directory.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from cogimg.data.synth.writer import modality_path
from cogimg.io import atomic_path

COLUMNS = ("T1w", "FLAIR", "T2starw", "dwi", "adc", "pet_amyloid", "pet_dat")
TITLES = {"T1w": "T1w", "FLAIR": "FLAIR", "T2starw": "T2*w", "dwi": "DWI", "adc": "ADC",
          "pet_amyloid": "amyloid PET", "pet_dat": "DAT SPECT"}
#: Which slice each diagnosis is shown in: (axis, MNI mm) — hippocampus level coronally for
#: the AD spectrum, the midbrain/striatum level axially for PD; stroke follows its lesion.
VIEW = {"CN": (1, -22.0), "MCI": (1, -22.0), "AD": (1, -22.0), "PD": (2, -6.0), "stroke": (2, None)}


def _read_rows(root: Path) -> list[dict]:
    with open(root / "participants.tsv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _truth(root: Path, pid: str) -> dict:
    path = root / "derivatives" / "truth" / pid / f"{pid}_effects.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _score(dx: str, truth: dict) -> float:
    """How clearly a subject shows its diagnosis (the preview picks the maximum)."""
    eff = truth.get("effects", {})
    if dx == "AD":
        return float(truth.get("ad", {}).get("neurodegeneration", 0.0))
    if dx == "MCI":  # an amyloid-positive MCI shows the PET signal
        return float(truth.get("ad", {}).get("amyloid_load", 0.0))
    if dx == "PD":
        return float(truth.get("pd", {}).get("severity", 0.0))
    if dx == "stroke":
        return float(eff.get("stroke", {}).get("total_volume_ml", 0.0))
    return -float(truth.get("clinical", {}).get("age", 0.0))  # CN: the youngest, least atrophy


def _pick_subjects(root: Path, rows: list[dict]) -> list[tuple[dict, dict]]:
    picked = []
    for dx in ("CN", "MCI", "AD", "PD", "stroke"):
        cands = [(r, _truth(root, r["participant_id"])) for r in rows if r["diagnosis"] == dx]
        if cands:
            picked.append(max(cands, key=lambda rt: _score(dx, rt[1])))
    return picked


def _load(root: Path, rel: str) -> np.ndarray | None:
    path = root / rel
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32)) if path.is_file() else None


def _slice(vol: np.ndarray, axis: int, index: int) -> np.ndarray:
    """2D slice, oriented for display (RAS data: anterior/superior up, patient left on the right)."""
    return np.rot90(np.take(vol, index, axis=axis))


def _index(affine: np.ndarray, axis: int, mm: float, n: int) -> int:
    return int(np.clip(round((mm - affine[axis, 3]) / affine[axis, axis]), 0, n - 1))


def _window(img: np.ndarray) -> tuple[float, float]:
    vals = img[img > 0]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [1, 99.5])
    return float(lo), float(hi)


def make_preview(root: str | Path, png: str | Path, dpi: int = 80) -> Path:
    """Draw the montage of the cohort at ``root`` into ``png`` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, png = Path(root), Path(png)
    rows = _read_rows(root)
    picked = _pick_subjects(root, rows)
    sites = sorted({r["site"] for r in rows})
    ncols = len(COLUMNS)
    nrows = len(picked) + 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.1 * ncols, 2.3 * nrows), squeeze=False,
                             facecolor="black")
    for ax in axes.flat:
        ax.set_facecolor("black")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)

    for r, (row, truth) in enumerate(picked):
        pid, dx = row["participant_id"], row["diagnosis"]
        t1_img = nib.load(root / modality_path(pid, "T1w"))
        affine, shape = t1_img.affine, t1_img.shape
        axis, mm = VIEW[dx]
        lesion = _load(root, f"derivatives/lesions/{pid}/anat/{pid}_msk.nii.gz")
        if dx == "stroke" and lesion is not None and lesion.any():
            index = int(np.argmax(lesion.sum(axis=(0, 1))))
        else:
            index = _index(affine, axis, mm if mm is not None else 0.0, shape[axis])
        maps = {k: _load(root, v) for k, v in truth.get("maps", {}).items()}
        mb = _load(root, f"derivatives/microbleeds/{pid}/anat/{pid}_msk.nii.gz")
        for c, modality in enumerate(COLUMNS):
            ax = axes[r, c]
            vol = _load(root, modality_path(pid, modality))
            if vol is None:
                continue
            sl = _slice(vol, axis, index)
            lo, hi = _window(vol)
            cmap = "inferno" if modality.startswith("pet") else "gray"
            ax.imshow(sl, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            overlay = None
            if modality == "T1w":
                overlay = maps.get("atrophy")
            elif modality == "T2starw":
                overlay = maps.get("pd")
            if overlay is not None and overlay.max() > 0:
                ov = _slice(overlay, axis, index)
                ax.imshow(np.ma.masked_less_equal(ov, 0.02 * overlay.max()), cmap="autumn",
                          alpha=0.55, vmin=0, vmax=float(overlay.max()), interpolation="nearest")
            if modality in ("dwi", "adc", "FLAIR") and lesion is not None and lesion.any():
                ax.contour(_slice(lesion, axis, index), [0.5], colors="cyan", linewidths=0.8)
            dat = maps.get("dat")
            if modality == "pet_dat" and dat is not None and dat.max() > 0:
                ax.contour(_slice(dat, axis, index), [0.5 * float(dat.max())], colors="cyan", linewidths=0.8)
            if modality == "T2starw" and mb is not None and mb.any():
                ax.contour(_slice(mb, axis, index), [0.5], colors="lime", linewidths=0.8)
            if r == 0:
                ax.set_title(TITLES[modality], color="white", fontsize=10)
        label = f"{dx}\n{pid} {row['site']}"
        extra = {"AD": "MMSE", "MCI": "MMSE", "CN": "MMSE", "PD": "UPDRS", "stroke": "NIHSS"}[dx]
        label += f"\n{extra} {row.get(extra, 'n/a')}"
        axes[r, 0].set_ylabel(label, color="white", fontsize=9)

    # Site row: a control's T1w per site (same coronal slice) + brain intensity histograms.
    last = axes[-1]
    hist_ax = last[min(len(sites), ncols - 1)]
    for k, site in enumerate(sites[: ncols - 1]):
        cands = [r for r in rows if r["site"] == site and r["diagnosis"] == "CN"] or \
                [r for r in rows if r["site"] == site]
        pid = cands[0]["participant_id"]
        vol = _load(root, modality_path(pid, "T1w"))
        img = nib.load(root / modality_path(pid, "T1w"))
        index = _index(img.affine, 1, -22.0, img.shape[1])
        lo, hi = _window(vol)
        last[k].imshow(_slice(vol, 1, index), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        last[k].set_title(f"{site} T1w ({pid})", color="white", fontsize=8)
        vals = vol[vol > 0]
        hist_ax.hist(vals / np.median(vals), bins=80, range=(0, 2), histtype="step", density=True,
                     label=site, linewidth=1)
    hist_ax.set_facecolor("white")
    hist_ax.set_title("T1w brain intensity / median", color="white", fontsize=8)
    hist_ax.legend(fontsize=6)
    hist_ax.tick_params(labelsize=6, colors="white")
    last[0].set_ylabel("sites", color="white", fontsize=9)
    fig.suptitle(f"cogimg synthetic cohort — {root.name}: one subject per diagnosis; "
                 "overlays: atrophy (T1w), PD change (T2*), DAT loss and lesions (cyan), microbleeds (green)",
                 color="white", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor="black", format="png")
    plt.close(fig)
    return png


__all__ = ["make_preview"]
