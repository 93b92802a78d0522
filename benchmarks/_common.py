"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path


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


#: Where benchmarks write their measured numbers (created on demand).
RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def write_result(name: str, payload: dict, results_dir: Path | None = None) -> Path:
    """Write ``payload`` plus the machine and library versions to ``results/<name>.json``.

    The numbers that back cogimg's defaults live there, not in docstrings; a benchmark run
    overwrites its file (commit it if the numbers are to be cited)."""
    import torch

    out = Path(results_dir or RESULTS_DIR) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
              "versions": {"python": platform.python_version(), "torch": torch.__version__},
              **payload}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return out
