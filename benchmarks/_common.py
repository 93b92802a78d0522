"""Small helpers shared by the benchmark scripts: timing, the run-time CLI flags every
benchmark takes (``--device``, ``--threads``) and :func:`write_result`, which writes a
benchmark's numbers with the machine, commit and package versions to ``results/<name>.json``.

A result file is a JSON object::

    {"benchmark": name, "date": UTC ISO-8601, "command": [argv...],
     "machine": {"device", "cpu_model", "cpu_count", "threads", "platform", "cuda",
                 "load_average"},
     "git": {"commit", "dirty"}, "versions": {"python", "torch", ...},
     "headline": {label: number} (optional: what the README quotes), ...the numbers}

``benchmarks/render_results.py`` renders every such file into ``results/README.md`` and the
headline block of ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Where benchmarks write their measured numbers (created on demand).
RESULTS_DIR = REPO / "results"
#: Distributions whose versions a result records (``None`` when not installed).
PACKAGES = ("cogimg", "torch", "lightning", "monai", "torchio", "numpy", "scipy", "nibabel",
            "nilearn", "timm", "scikit-learn")


def best_time(fn: Callable[[], object], repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def add_runtime_args(parser: argparse.ArgumentParser, threads: int | None = None) -> None:
    """Add ``--device`` (``auto``: CUDA when torch sees a GPU, else CPU) and ``--threads``
    (torch intra-op threads; default ``threads``, or torch's own default when ``None``)."""
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (CUDA when available; default)")
    parser.add_argument("--threads", type=int, default=threads,
                        help="torch CPU threads (default: %(default)s; None = torch's default)")


def apply_runtime(args: argparse.Namespace):
    """Set torch's thread count from ``args.threads`` and return the ``torch.device`` that
    ``args.device`` names (``auto`` resolved). Exits with a message when CUDA is asked for
    but torch sees no GPU."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch sees no GPU")
    args.device = str(device)
    return device


def lightning_accelerator(device) -> str:
    """Lightning's ``accelerator`` for a ``torch.device`` (``"gpu"`` or ``"cpu"``)."""
    return "gpu" if str(device).startswith("cuda") else "cpu"


def cpu_model() -> str | None:
    """The CPU's model name: ``platform.processor()``, else ``/proc/cpuinfo``'s ``model name``
    (Linux, where ``platform.processor()`` is often empty), else ``None``."""
    name = platform.processor()
    if name and name not in ("x86_64", "aarch64", "arm64", "i386"):
        return name
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith(("model name", "cpu model", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or None


def environment(device: str | None = None) -> dict:
    """Machine, commit, package versions, date and command line of this process."""
    import torch

    from cogimg.tracking.provenance import git_info, package_versions

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    versions = package_versions(PACKAGES)
    versions["torch"] = torch.__version__  # with its build tag (+cpu, +cu130 …)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "machine": {"device": device or ("cuda" if cuda else "cpu"), "cpu_model": cpu_model(),
                    "cpu_count": cpus, "threads": torch.get_num_threads(),
                    "platform": platform.platform(), "cuda": cuda,
                    # 1, 5 and 15 min averages when the file is written: other jobs on the
                    # machine while the benchmark ran show here (None where the OS has none)
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "git": git_info(REPO),
        "versions": versions,
    }


def run_study_benchmark(study_path: Path, description: str, argv: list[str] | None = None):
    """Parse a study benchmark's command line (``--out``, ``--preset``, ``--seeds``,
    ``--results-dir``, ``--workers``) and run the study (finished runs are kept) into ``--out``
    (default ``runs/studies/<study>[_<preset>]``). Returns ``(args, out, study, outputs)``:
    the parsed arguments (``args.result_name``: ``<study>[_<preset>]``, the result file's
    name), the study folder, the resolved study and :func:`cogimg.tracking.study.run_study`'s
    outputs."""
    from cogimg.tracking.study import run_study
    from cogimg.tracking.study_spec import load_study

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=None,
                        help=f"study folder (default runs/studies/{study_path.stem}[_<preset>])")
    parser.add_argument("--preset", choices=("tiny", "full"), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1, help="synthesis processes")
    args = parser.parse_args(argv)
    args.result_name = study_path.stem + (f"_{args.preset}" if args.preset else "")
    out = args.out or REPO / "runs" / "studies" / args.result_name
    study = load_study(study_path, args.preset)
    outputs = run_study(study_path, out, seeds=args.seeds, workers=args.workers, study=study)
    return args, out, study, outputs


def study_test_leaderboard(out: Path, n_boot: int, stage: str = "test"):
    """The leaderboard of a study's runs (``out/runs``) on their ``stage`` subjects (default the
    held-out **test** subjects; the study's own ``leaderboard.*`` is the validation stage), also
    written as ``out/leaderboard_<stage>.csv``; ``None`` without runs."""
    from cogimg.io import atomic_write_text
    from cogimg.tracking.leaderboard import find_runs, leaderboard

    runs, _ = find_runs(out / "runs", stage=stage)
    if not runs:
        return None
    board = leaderboard(runs, n_boot=n_boot)
    atomic_write_text(out / f"leaderboard_{stage}.csv", board.to_csv(index=False))
    return board


def write_result(name: str, payload: dict, results_dir: Path | None = None,
                 device: str | None = None, headline: dict | None = None) -> Path:
    """Write ``payload`` with :func:`environment` to ``results/<name>.json`` atomically.

    ``headline`` maps a short label to a number (or short string) the README may quote;
    ``benchmarks/render_results.py`` puts it in ``README.md``. A benchmark run overwrites its
    file (commit it if the numbers are to be cited). Returns the path."""
    from cogimg.io import atomic_write_text

    out = Path(results_dir or RESULTS_DIR) / f"{name}.json"
    record = {"benchmark": name, **environment(device)}
    if headline:
        record["headline"] = headline
    record.update(payload)
    atomic_write_text(out, json.dumps(record, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return out
