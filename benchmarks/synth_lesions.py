"""How long do the stroke and microbleed effects take per subject?

Target (cogimg issue 4): ``stroke_effect`` ≤ ~0.1–0.2 s per subject at 2 mm, so that the
whole cohort (120 subjects, 60 s, 2 cores) has room for anatomy, contrasts and writing;
``microbleed_effect`` runs on every subject and should cost well under that.
This draws real subject anatomies (``anatomy.build_anatomy``), then times each effect on
them — CPU and wall time, median and max — once with BLAS limited to 1 thread and once with
the default thread count, side by side. The effects' small ``(N, 3) @ (3, 3)`` products are
~100× slower with multi-threaded OpenBLAS on a busy 2-core machine (threads spin).

    python benchmarks/synth_lesions.py                 # 20 subjects at 2 mm
    python benchmarks/synth_lesions.py --spacing 1 --subjects 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from cogimg.data.synth.anatomy import build_anatomy, load_template
from cogimg.data.synth.microbleeds import microbleed_effect
from cogimg.data.synth.stroke import stroke_effect

TARGET_STROKE_S = 0.2


def time_effect(effect, anatomies, difficulty: float) -> tuple[np.ndarray, np.ndarray]:
    """(CPU s, wall s) per subject of ``effect`` over ``anatomies`` (after one warm-up)."""
    effect(np.random.default_rng(0), anatomies[0], difficulty)  # loads atlas + shape library
    cpu, wall = [], []
    for seed, anatomy in enumerate(anatomies):
        c, w = time.process_time(), time.perf_counter()
        effect(np.random.default_rng(seed), anatomy, difficulty)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return np.array(cpu), np.array(wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--difficulty", type=float, default=0.5)
    args = parser.parse_args()

    template = load_template(args.spacing)
    anatomies = [build_anatomy(template, np.random.default_rng(1000 + s)).anatomy
                 for s in range(args.subjects)]
    print(f"{args.subjects} subjects, grid {anatomies[0].shape} at {args.spacing:g} mm, "
          f"difficulty {args.difficulty:g}")
    print(f"{'effect':<18}{'BLAS threads':>13}{'cpu median':>12}{'cpu max':>10}"
          f"{'wall median':>13}{'wall max':>10}")
    medians = {}
    for effect in (stroke_effect, microbleed_effect):
        for threads in (1, None):
            with threadpool_limits(limits=threads, user_api="blas"):
                cpu, wall = time_effect(effect, anatomies, args.difficulty)
            medians[effect.__name__, threads] = np.median(wall)
            print(f"{effect.__name__:<18}{threads or 'default':>13}{np.median(cpu) * 1e3:>10.0f}ms"
                  f"{cpu.max() * 1e3:>8.0f}ms{np.median(wall) * 1e3:>11.0f}ms{wall.max() * 1e3:>8.0f}ms")
    stroke_1 = medians["stroke_effect", 1]
    print(f"stroke median wall (1 BLAS thread) {stroke_1:.3f} s vs target {TARGET_STROKE_S} s: "
          f"{stroke_1 / TARGET_STROKE_S:.2f}× the budget; default threads are "
          f"{medians['stroke_effect', None] / stroke_1:.1f}× slower")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
