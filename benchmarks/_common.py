"""Small helpers shared by the benchmark scripts (timing, peak memory)."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable


def peak_rss_gb(include_children: bool = True) -> float:
    """Peak resident set size of this process (and finished children) in GiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if include_children:
        usage = max(usage, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return usage * scale / 1024**3


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
