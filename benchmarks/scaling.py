"""Scaling beyond one process, measured side by side in one run.

- **DDP training throughput**: patches per second of ``cogimg fit`` (stroke U-Net,
  ``experiments/stroke/seg_unet.yaml``) with 1 and with 2 DDP processes on CPU (gloo, one
  thread each, launched by ``torchrun`` as a user would), on the same cached cohort. Each
  process trains on its own share of the subjects, so an epoch holds the same patches either
  way; throughput = patches trained / wall seconds of the fit (from the run's manifest, so
  process start-up is not counted). Goal (issue "Beyond one machine, correctly"): 2 processes
  ≥ 1.6× the patches/s of one.

Run: ``.venv/bin/python benchmarks/scaling.py [--quick]`` (``--quick``: fewer epochs, for a
smoke run). Writes ``results/scaling.json`` (``results/scaling_quick.json`` with ``--quick``).
The cohort is made on first use under ``--data``. ``--device auto`` (default) trains on GPUs
(NCCL) when torch sees at least two, else on CPU (gloo); ``--device cpu|cuda`` chooses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "experiments" / "stroke" / "seg_unet.yaml"


def ensure_cohort(data: Path, subjects: int) -> None:
    if (data / "participants.tsv").is_file():
        return
    from cogimg.data.synth import generate_cohort

    generate_cohort(data, subjects, seed=0, spacing_mm=4.0, difficulty="medium", workers=2,
                    diseases=("stroke",), proportions={"CN": 0.0, "stroke": 1.0}, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fit_throughput(processes: int, data: Path, out: Path, epochs: int, patch: int,
                   samples_per_volume: int, batch_size: int, accelerator: str = "cpu") -> dict:
    """Patches/s of one ``cogimg fit`` with ``processes`` DDP ranks (one thread each)."""
    root = out / f"ddp{processes}"
    shutil.rmtree(root, ignore_errors=True)  # a scratch folder: the manifest read below is this fit's
    args = ["fit", "--config", str(CONFIG), "--trainer.default_root_dir", str(root),
            "--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0", "--trainer.precision", "32-true",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            "--trainer.accelerator", accelerator, "--trainer.devices", str(processes),
            "--trainer.strategy", "ddp" if processes > 1 else "auto",
            "--data.init_args.data_root", str(data), "--data.init_args.cache_dir", str(out / "cache"),
            "--data.init_args.patch_size", f"[{patch}, {patch}, {patch}]",
            "--data.init_args.samples_per_volume", str(samples_per_volume),
            "--data.init_args.queue_length", str(2 * samples_per_volume),
            "--data.init_args.batch_size", str(batch_size), "--data.init_args.num_workers", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COGIMG_WANDB": "off"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "cogimg.cli", *args]
    subprocess.run(command, env=env, check=True, cwd=REPO)
    manifest = json.loads(next(root.rglob("manifest.json")).read_text())
    fit = manifest["fits"][-1]
    patches = fit["global_step"] * batch_size * processes
    return {"processes": processes, "fit_s": fit["wall_s"], "steps_per_rank": fit["global_step"],
            "patches": patches, "patches_per_s": patches / fit["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "bench_data" / "stroke4mm_scaling")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "benchmarks" / "scaling")
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="1 epoch, 12 subjects: a smoke run")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: CUDA when torch sees >= 2 GPUs, else CPU")
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.device_count() >= 2 else "cpu"
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    if args.quick:
        args.epochs, args.subjects = 1, 12
        args.data = args.data.with_name(args.data.name + "_quick")
    ensure_cohort(args.data, args.subjects)
    # Fill the cache once, in one process, so neither measurement pays for it.
    fit_throughput(1, args.data, args.out / "warmup", 1, args.patch, 4, 2, accelerator)
    rows = [fit_throughput(n, args.data, args.out, args.epochs, args.patch, 4, 2, accelerator)
            for n in (1, 2)]
    ratio = rows[1]["patches_per_s"] / rows[0]["patches_per_s"]
    print(f"{'processes':>9} {'fit (s)':>8} {'patches':>8} {'patches/s':>10}")
    for r in rows:
        print(f"{r['processes']:>9} {r['fit_s']:>8.1f} {r['patches']:>8} {r['patches_per_s']:>10.2f}")
    print(f"2 processes / 1 process: {ratio:.2f}x patches/s (goal >= 1.6x)")
    write_result("scaling_quick" if args.quick else "scaling",
                 {"ddp": {"rows": rows, "ratio_2_vs_1": ratio, "goal": 1.6, "epochs": args.epochs,
                          "subjects": args.subjects, "patch": args.patch}},
                 device=args.device,
                 headline={"DDP 2 processes / 1, patches/s": ratio, "goal": 1.6})


if __name__ == "__main__":
    main()
