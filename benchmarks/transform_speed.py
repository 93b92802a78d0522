"""Side-by-side timings behind cogimg's own versions of library operations.

Each pair runs the library's way and cogimg's way on the same data, best of ``--repeats``
wall times after one warm-up, and writes every number to ``results/transform_speed.json``:

* ``bias_field``: ``tio.RandomBiasField`` vs ``RandomBiasFieldSeparable`` (same seed, so
  the same coefficients; ``cogimg.data.augmentation``);
* ``elastic``: ``tio.RandomElasticDeformation`` vs ``RandomElasticDeformationCoarse``
  (same seed, so the same B-spline);
* ``float16_to_float32``: numpy ``astype`` vs torch ``.float()`` of a cached float16 volume
  (``cogimg.data.cache.read_cached_array``);
* ``gzip``: float32 vs int16 voxels at gzip level 1 and 6, time and bytes
  (``cogimg.data.synth.writer``);
* ``connected_components``: scipy 26-connected labelling, and cc3d's if it is installed
  (``cogimg.metrics.segmentation.connected_components``).

The volume is a 2 mm brain grid (99 × 117 × 95, smooth random intensities with a blob mask).
Everything runs on the CPU (augmentation runs in DataLoader workers) with ``--threads`` torch
threads (default 1, as in those workers).

    python benchmarks/transform_speed.py             # well under a minute
    python benchmarks/transform_speed.py --quick     # < 1 min, results/transform_speed_quick.json
"""

from __future__ import annotations

import argparse
import gzip

import numpy as np
import torch
import torchio as tio
from _common import best_time, write_result
from scipy import ndimage


def volume(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Smooth float32 intensities in [0, 1] and a binary mask of a few blobs, both ``shape``."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 3)
    image = (image - image.min()) / (image.max() - image.min())
    return image, image > np.quantile(image, 0.97)


def pair(name: str, library, cogimg, repeats: int) -> dict:
    t_lib, t_ours = best_time(library, repeats), best_time(cogimg, repeats)
    row = {"library_s": t_lib, "cogimg_s": t_ours, "speedup": t_lib / t_ours}
    print(f"{name:22s} library {t_lib:8.4f} s   cogimg {t_ours:8.4f} s   {row['speedup']:6.1f}×",
          flush=True)
    return row


def seeded(transform, subject: tio.Subject):
    def run():
        torch.manual_seed(0)
        return transform(subject)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="half of --shape, one repeat")
    parser.add_argument("--shape", default="99,117,95", help="grid X,Y,Z (default: 2 mm brain)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1, as in DataLoader workers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = tuple(int(n) for n in args.shape.split(","))
    if args.quick:
        shape = tuple(n // 2 for n in shape)
    repeats = 1 if args.quick else args.repeats
    image, mask = volume(shape)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    subject = tio.Subject(img=tio.ScalarImage(tensor=torch.from_numpy(image)[None], affine=affine))

    from cogimg.data.augmentation import RandomBiasFieldSeparable, RandomElasticDeformationCoarse

    rows = {}
    print(f"grid {shape}, best of {repeats}, {args.threads} torch thread(s)")
    rows["bias_field"] = pair("bias_field", seeded(tio.RandomBiasField(), subject),
                              seeded(RandomBiasFieldSeparable(), subject), repeats)
    rows["elastic"] = pair("elastic", seeded(tio.RandomElasticDeformation(), subject),
                           seeded(RandomElasticDeformationCoarse(), subject), repeats)
    half = image.astype(np.float16)
    rows["float16_to_float32"] = pair("float16_to_float32", lambda: half.astype(np.float32),
                                      lambda: torch.from_numpy(half).float(), repeats)
    as_int16 = np.round(image * 32767).astype(np.int16).tobytes()
    as_float32 = image.tobytes()
    for level in (1, 6):
        rows[f"gzip_level{level}"] = pair(f"gzip level {level}",
                                          lambda level=level: gzip.compress(as_float32, level),
                                          lambda level=level: gzip.compress(as_int16, level), repeats)
        rows[f"gzip_level{level}"].update(
            library_bytes=len(gzip.compress(as_float32, level)),
            cogimg_bytes=len(gzip.compress(as_int16, level)))
    structure = np.ones((3, 3, 3), dtype=bool)
    components = {"scipy_s": best_time(lambda: ndimage.label(mask, structure), repeats)}
    try:
        import cc3d

        components["cc3d_s"] = best_time(lambda: cc3d.connected_components(mask, connectivity=26),
                                         repeats)
    except ImportError:
        components["cc3d_s"] = None  # not installed
    print(f"{'connected_components':22s} scipy {components['scipy_s']:8.4f} s   cc3d {components['cc3d_s']}")
    rows["connected_components"] = components
    write_result("transform_speed_quick" if args.quick else "transform_speed",
                 {"settings": {"shape": list(shape), "repeats": repeats, "quick": args.quick,
                               "torchio": tio.__version__},
                  "rows": rows},
                 device="cpu",
                 headline={f"{name} speed-up": row["speedup"] for name, row in rows.items()
                           if "speedup" in row})


if __name__ == "__main__":
    main()
