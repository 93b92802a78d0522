"""Run a command as a child process and measure its wall time and peak resident memory.

Peak memory is the largest sum of RSS over the child and all its descendants (nnU-Net's
data-augmentation workers, Lightning's loader worker), sampled every ``interval`` seconds
with psutil: a sampled lower bound of the true peak, the same way for both contenders.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil


def tree_rss_bytes(proc: psutil.Process) -> int:
    """RSS in bytes of ``proc`` plus its live descendants (0 for processes already gone)."""
    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_measured(cmd: Sequence[str], env: dict[str, str] | None = None,
                 log: Path | None = None, interval: float = 0.5) -> dict[str, float]:
    """Run ``cmd`` (stdout+stderr to ``log`` when given) and wait for it.

    Returns ``{"wall_s", "peak_rss_gb"}``; raises ``CalledProcessError`` naming the log on
    a non-zero exit."""
    start = time.perf_counter()
    peak = 0
    with open(log or os.devnull, "w", encoding="utf-8") as handle:
        child = subprocess.Popen(list(cmd), env={**os.environ, **(env or {})}, stdout=handle,
                                 stderr=subprocess.STDOUT)
        proc = psutil.Process(child.pid)
        while child.poll() is None:
            peak = max(peak, tree_rss_bytes(proc))
            time.sleep(interval)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, list(cmd),
                                            output=f"see {log}" if log else None)
    return {"wall_s": round(wall, 2), "peak_rss_gb": round(peak / 1e9, 3)}
