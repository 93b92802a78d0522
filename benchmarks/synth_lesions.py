"""How long do the stroke and microbleed effects take per subject?

Target (cogimg issue 4): ``stroke_effect`` ≤ ~0.1–0.2 s per subject at 2 mm, so that the
whole cohort (120 subjects, 60 s, 2 cores) has room for anatomy, contrasts and writing;
``microbleed_effect`` runs on every subject and should cost well under that.
This draws real subject anatomies (``anatomy.build_anatomy``), then times each effect on
them — CPU and wall time, median and max — once with BLAS limited to 1 thread and once with
``--threads`` BLAS threads (default: the library's own count), side by side: the effects'
small ``(N, 3) @ (3, 3)`` products can be much slower with multi-threaded OpenBLAS on a busy
machine (threads spin). Every median and max goes to ``results/synth_lesions.json``
(``--quick``: 5 subjects, ``results/synth_lesions_quick.json``).

    python benchmarks/synth_lesions.py                 # 20 subjects at 2 mm
    python benchmarks/synth_lesions.py --quick
    python benchmarks/synth_lesions.py --spacing 1 --subjects 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import write_result
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
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS threads of the second run (default: the library's count)")
    parser.add_argument("--quick", action="store_true", help="5 subjects")
    args = parser.parse_args()
    if args.quick:
        args.subjects = 5

    template = load_template(args.spacing)
    anatomies = [build_anatomy(template, np.random.default_rng(1000 + s)).anatomy
                 for s in range(args.subjects)]
    print(f"{args.subjects} subjects, grid {anatomies[0].shape} at {args.spacing:g} mm, "
          f"difficulty {args.difficulty:g}")
    print(f"{'effect':<18}{'BLAS threads':>13}{'cpu median':>12}{'cpu max':>10}"
          f"{'wall median':>13}{'wall max':>10}")
    medians, rows = {}, []
    for effect in (stroke_effect, microbleed_effect):
        for threads in (1, args.threads):
            with threadpool_limits(limits=threads, user_api="blas"):
                cpu, wall = time_effect(effect, anatomies, args.difficulty)
            medians[effect.__name__, threads] = np.median(wall)
            rows.append({"effect": effect.__name__, "blas_threads": threads or "default",
                         "cpu_median_s": float(np.median(cpu)), "cpu_max_s": float(cpu.max()),
                         "wall_median_s": float(np.median(wall)), "wall_max_s": float(wall.max())})
            print(f"{effect.__name__:<18}{threads or 'default':>13}{np.median(cpu) * 1e3:>10.0f}ms"
                  f"{cpu.max() * 1e3:>8.0f}ms{np.median(wall) * 1e3:>11.0f}ms{wall.max() * 1e3:>8.0f}ms")
    stroke_1 = medians["stroke_effect", 1]
    print(f"stroke median wall (1 BLAS thread) {stroke_1:.3f} s vs target {TARGET_STROKE_S} s: "
          f"{stroke_1 / TARGET_STROKE_S:.2f}× the budget; default threads are "
          f"{medians['stroke_effect', args.threads] / stroke_1:.1f}× slower")
    write_result("synth_lesions_quick" if args.quick else "synth_lesions",
                 {"settings": {"subjects": args.subjects, "spacing_mm": args.spacing,
                               "difficulty": args.difficulty, "threads": args.threads},
                  "rows": rows, "target_stroke_s": TARGET_STROKE_S},
                 device="cpu",
                 headline={"stroke_effect median, s (1 BLAS thread)": float(stroke_1),
                           "target, s": TARGET_STROKE_S})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
