"""The synthetic cohort's whole-brain parcellation on the BOLD grid: named structures of the
generator's own anatomy plus seed regions that share out the rest of the grey matter, each
assigned to a large-scale network (no atlas download). :mod:`cogimg.data.synth.bold` simulates
the signals on it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from cogimg.io import atomic_save_nifti, atomic_write_text

BOLD_SPACING_MM = 4.0
NETWORKS = ("default_mode", "sensorimotor", "visual", "salience", "basal_ganglia", "frontoparietal")
#: Structures taken from the generator's region labels: base name → network.
STRUCTURES = {"hippocampus": "default_mode", "precuneus": "default_mode", "putamen": "basal_ganglia",
              "caudate": "basal_ganglia", "pallidum": "basal_ganglia"}
#: Left-hemisphere seeds (MNI mm; mirrored to the right) that share out the other grey matter.
SEEDS = (
    ("pcc", (-6.0, -52.0, 28.0), "default_mode"),
    ("mpfc", (-6.0, 52.0, 10.0), "default_mode"),
    ("angular", (-45.0, -66.0, 34.0), "default_mode"),
    ("lateral_temporal", (-58.0, -22.0, -12.0), "default_mode"),
    ("temporal_pole", (-40.0, 14.0, -30.0), "default_mode"),
    ("precentral", (-38.0, -20.0, 56.0), "sensorimotor"),
    ("postcentral", (-42.0, -32.0, 54.0), "sensorimotor"),
    ("sma", (-6.0, -8.0, 60.0), "sensorimotor"),
    ("superior_temporal", (-55.0, -20.0, 6.0), "sensorimotor"),
    ("cerebellum", (-25.0, -65.0, -35.0), "sensorimotor"),
    ("v1", (-10.0, -88.0, 4.0), "visual"),
    ("lateral_occipital", (-40.0, -80.0, 2.0), "visual"),
    ("fusiform", (-32.0, -56.0, -14.0), "visual"),
    ("insula", (-38.0, 10.0, 0.0), "salience"),
    ("dacc", (-6.0, 22.0, 32.0), "salience"),
    ("dlpfc", (-42.0, 32.0, 30.0), "frontoparietal"),
    ("ips", (-36.0, -56.0, 46.0), "frontoparietal"),
    ("superior_frontal", (-22.0, 20.0, 56.0), "frontoparietal"),
    ("orbitofrontal", (-26.0, 36.0, -16.0), "frontoparietal"),
)
THALAMUS = ((-12.0, -18.0, 8.0), (8.0, 10.0, 8.0))
MAX_SEED_DISTANCE_MM = 40.0

# --------------------------------------------------------------------------- parcellation
@dataclass(frozen=True)
class BoldGrid:
    """The 4 mm grid and parcellation shared by every subject.

    Attributes:
        affine: (4, 4) voxel → MNI mm; shape: (X, Y, Z).
        labels: int16 (X, Y, Z) parcel labels (``k`` = ``names[k - 1]``).
        names / networks: per parcel.
        gm / wm / csf: float32 (X, Y, Z) tissue fractions; brain: bool (X, Y, Z).
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    labels: np.ndarray
    names: list[str]
    networks: list[str]
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray


@lru_cache(maxsize=2)
def build_bold_grid(template_spacing_mm: float) -> BoldGrid:
    """Parcellate the template on the 4 mm grid (see the module docstring)."""
    from cogimg.data.synth.anatomy import load_template

    tpl = load_template(template_spacing_mm)
    fov = np.array(tpl.maps["gm"].shape) - 1.0
    shape = tuple(int(n) for n in np.floor(fov / BOLD_SPACING_MM + 1e-6).astype(int) + 1)
    affine = np.diag([BOLD_SPACING_MM] * 3 + [1.0])
    affine[:3, 3] = tpl.src_origin_mm
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = (idx * BOLD_SPACING_MM + tpl.src_origin_mm).astype(np.float32)
    gm, wm, csf, brain = (tpl.sample(k, world).reshape(shape).astype(np.float32)
                          for k in ("gm", "wm", "csf", "brain"))
    brain = brain > 0.5
    region = tpl.sample("labels", world, order=0).reshape(shape).astype(int)

    names, networks = [], []
    labels = np.zeros(shape, np.int16)

    def add(name: str, network: str, mask: np.ndarray) -> None:
        mask = mask & (labels == 0) & brain
        if mask.sum() == 0:
            return
        names.append(name)
        networks.append(network)
        labels[mask] = len(names)

    for base, network in STRUCTURES.items():
        for side in ("l", "r"):
            add(f"{base}_{side}", network, region == tpl.names.index(f"{base}_{side}") + 1)
    world3 = world.reshape(*shape, 3)
    centre, radii = THALAMUS
    for side, sign in (("l", 1.0), ("r", -1.0)):
        d = (world3 - np.array([centre[0] * sign, *centre[1:]])) / np.array(radii)
        add(f"thalamus_{side}", "basal_ganglia", ((d**2).sum(-1) <= 1.0) & (gm + wm >= 0.5) & (csf < 0.5))
    seeds = [(f"{n}_{s}", np.array([c[0] * sign, c[1], c[2]]), net)
             for n, c, net in SEEDS for s, sign in (("l", 1.0), ("r", -1.0))]
    free = (gm >= 0.3) & brain & (labels == 0)
    pts = world3[free]
    dist = np.stack([np.linalg.norm(pts - c, axis=1) for _, c, _ in seeds], 1)
    nearest = dist.argmin(1)
    near = dist.min(1) <= MAX_SEED_DISTANCE_MM
    assign = np.zeros(shape, int)
    assign[free] = np.where(near, nearest + 1, 0)
    for j, (name, _, network) in enumerate(seeds):
        add(name, network, assign == j + 1)
    return BoldGrid(affine, shape, labels, names, networks, gm, wm, csf, brain)


def write_parcellation(root: Path, grid: BoldGrid) -> dict:
    """Write the label NIfTI and its TSV under ``root/derivatives/cogimg_atlas``."""
    from cogimg.data.func.bold import ATLAS_DIR, ATLAS_IMAGE, ATLAS_TABLE

    img = nib.Nifti1Image(grid.labels, grid.affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(grid.affine, code=1)
    img.header.set_sform(grid.affine, code=4)
    atomic_save_nifti(img, root / ATLAS_DIR / ATLAS_IMAGE)
    lines = ["index\tname\tnetwork"] + [f"{k}\t{n}\t{net}" for k, (n, net)
                                          in enumerate(zip(grid.names, grid.networks), start=1)]
    atomic_write_text(root / ATLAS_DIR / ATLAS_TABLE, "\n".join(lines) + "\n")
    return {"image": str(ATLAS_DIR / ATLAS_IMAGE), "labels": str(ATLAS_DIR / ATLAS_TABLE),
            "regions": len(grid.names), "networks": list(NETWORKS)}
