"""Provenance of a run: git commit, package versions, file and dataset hashes, the device, and
the peak memory of the process tree — what every manifest (:mod:`cogimg.tracking.run`) and
benchmark result records."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

PACKAGES = ("cogimg", "torch", "lightning", "monai", "torchio", "timm", "numpy", "scipy",
            "scikit-learn", "nibabel", "optuna", "wandb")


def git_info(folder: str | Path | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the git checkout holding ``folder``
    (default: cogimg's source)."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True,
                                text=True, encoding="utf-8", errors="replace", timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}  # an installed wheel, or git missing
    return {"commit": commit, "dirty": bool(status.strip())}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when absent), plus Python's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(root: str | Path) -> str:
    """sha256 over ``participants.tsv``'s bytes and every file's relative path and size.

    Cheap (no image is read) yet changes when a subject, scan or label is added, removed or
    rewritten with another size, or when the participants table changes.
    """
    root = Path(root)
    digest = hashlib.sha256()
    table = root / "participants.tsv"
    if table.is_file():
        digest.update(table.read_bytes())
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def device_info(trainer) -> dict[str, Any]:
    import torch

    info = {"accelerator": type(trainer.accelerator).__name__, "devices": trainer.num_devices,
            "precision": str(trainer.precision), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "host": platform.node(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    return info


def _resident_bytes(process) -> int:
    """Proportional set size of a ``psutil.Process`` where the OS reports it, else its RSS."""
    try:
        return process.memory_full_info().pss
    except AttributeError:  # no ``pss`` field outside Linux
        return process.memory_info().rss


class PeakMemory:
    """Peak resident memory (GiB) of this process and its children (data loader workers),
    sampled every ``interval_s`` by a daemon thread between :meth:`start` and :meth:`stop`;
    plus peak CUDA memory allocated by torch. (``ru_maxrss`` would report the lifetime peak of
    the process, wrong for the second of two fits in one process.)

    Each process counts its proportional set size (PSS, Linux): pages shared by the parent and
    its forked workers (the torch libraries, the copy-on-write dataset) are split between them
    instead of counted once per process, so the sum is the memory the run really holds. Summed
    RSS double-counts them: with even one loader worker it reports far more than the run
    holds. Where PSS is unavailable (macOS, Windows) RSS is summed, an upper bound."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peak_memory_gb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            try:
                rss = sum(_resident_bytes(p) for p in (me, *me.children(recursive=True)))
            except psutil.Error:  # a worker exited between listing and reading it
                rss = 0
            self.peak_memory_gb = max(self.peak_memory_gb, rss / 1024**3)
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> PeakMemory:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="cogimg-peak-memory")
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        import torch

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        cuda = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else 0.0
        return {"peak_memory_gb": round(self.peak_memory_gb, 3), "peak_cuda_gb": round(cuda, 3)}


def provenance() -> dict[str, Any]:
    """Manifest entries of the running process: command line, working folder, git, packages."""
    return {"command": sys.argv, "cwd": os.getcwd(), "git": git_info(), "packages": package_versions()}
