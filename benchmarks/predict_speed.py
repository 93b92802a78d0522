"""Where cogimg predict's time goes for one stroke case; batched vs sequential mirroring.

The batched-mirror sliding window and the sequential one it replaced, side by side.

A small stroke-only synthetic cohort (``cogimg synth``, ``--spacing`` mm) and a checkpoint of
the default ``experiments/stroke/seg_unet.yaml`` U-Net trained for ``--train-steps`` steps are
made once under ``--out`` (the weights barely matter for timing; they are not random so the
probabilities are not flat). Then, for one subject:

1. **Process level.** ``cogimg predict --tta none|flip`` as a subprocess (wall time: start-up,
   imports, checkpoint, preprocessing, windows, native grid, report, writing), and the
   import of the modules it needs alone (``python -c 'import …'``).
2. **Stages, in process.** Checkpoint load, reading the input, preprocessing, sliding windows
   (``none``: one pass; ``flip``: 8 mirrored copies), resampling back to the native grid, the
   report, writing the mask.
3. **Before vs after.** Reading a BIDS subject: the whole tree with every modality (before)
   vs the model's modalities only (after). The sliding-window stage by the previous loop
   (reimplemented here: one sliding-window pass per mirrored copy, copies summed one after
   the other) and by :func:`cogimg.models.sliding_window.sliding_window_predict` (all copies
   as one batch of windows), best of ``--repeats``; per-case seconds are the stage sum with
   either, and the max |Δprobability| between the two paths is recorded.

Every time is recorded as wall seconds and as CPU seconds of the process (with one torch
thread the CPU time is the work done, steadier than wall time on a shared machine).
Writes ``results/predict_speed.json``.

    python benchmarks/predict_speed.py --threads 1                 # CPU, one thread
    python benchmarks/predict_speed.py --device cuda --sw-batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from _common import REPO, add_runtime_args, apply_runtime, write_result

from cogimg.models.sliding_window import (
    flip_combinations,
    sliding_window_logits,
    sliding_window_predict,
)

CONFIG = REPO / "experiments/stroke/seg_unet.yaml"
IMPORTS = ("import torch; import cogimg.commands.predict; import cogimg.inference; "
           "import cogimg.tasks.segmentation")


def sequential_mirror_predict(model, image, roi_size, overlap, sw_batch_size, sigma_scale,
                              tta_flip_axes, channels_last):
    """The loop ``sliding_window_predict`` ran before: one sliding-window pass per mirrored
    copy of ``image`` ``(B, C, X, Y, Z)``; returns the mean probabilities ``(B, K, X, Y, Z)``."""
    amp = image.device.type == "cuda"

    def net(x):
        return model(x.contiguous(memory_format=torch.channels_last_3d) if channels_last else x)

    total = None
    flips = flip_combinations(tuple(tta_flip_axes))
    with torch.inference_mode(), torch.autocast(image.device.type, enabled=amp):
        for axes in flips:
            dims = [a + 2 for a in axes]
            x = torch.flip(image, dims) if dims else image
            logits = sliding_window_logits(net, x, roi_size, overlap, sw_batch_size, sigma_scale)
            probs = torch.softmax(logits.float(), dim=1)
            probs = torch.flip(probs, dims) if dims else probs
            total = probs if total is None else total + probs
    return total / len(flips)


def ensure_checkpoint(out: Path, subjects: int, spacing: float, steps: int) -> Path:
    """A cohort under ``out/cohort`` and ``out/run/final.ckpt`` trained for ``steps`` steps."""
    cohort, run_dir = out / "cohort", out / "run"
    ckpt = run_dir / "final.ckpt"
    if not (cohort / "participants.tsv").is_file():
        subprocess.run([str(Path(sys.executable).with_name("cogimg")), "synth", "--out",
                        str(cohort), "--subjects", str(subjects), "--spacing", str(spacing),
                        "--diseases", "stroke", "--proportions", "CN=0,stroke=1", "--seed", "0",
                        "--no-progress"], check=True)
    if not ckpt.is_file():
        from lightning.pytorch.callbacks import Callback

        from cogimg.tracking.experiment import run_experiment

        class SaveFinal(Callback):
            def on_train_end(self, trainer, pl_module) -> None:
                trainer.save_checkpoint(ckpt)

        run_experiment(CONFIG, run_dir, name="predict_speed", callbacks=[SaveFinal()], overrides=[
            "--data.init_args.data_root", str(cohort), "--data.init_args.cache_dir",
            str(out / "cache"), "--data.init_args.n_folds", "2", "--data.init_args.num_workers",
            "0", "--data.init_args.samples_per_volume", "2", "--data.init_args.queue_length", "4",
            "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
            "--trainer.accelerator", "cpu"])
    return ckpt


def timed(fn):
    """(wall seconds, CPU seconds of this process, result) of one call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def run_timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the subprocess ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return round(time.perf_counter() - wall, 3), round(cpu, 3)


def process_times(ckpt: Path, case: Path, out: Path, device: str, threads: int | None,
                  sw_batch_size: int | None) -> dict:
    """Wall and CPU seconds of ``cogimg predict --tta none|flip`` and of its imports alone."""
    env = {**os.environ, "COGIMG_WANDB": "off"}
    if threads:
        env |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result = {}
    result["imports"] = dict(zip(("wall_s", "cpu_s"),
                                 run_timed([sys.executable, "-c", IMPORTS], env)))
    for tta in ("none", "flip"):
        cmd = [str(Path(sys.executable).with_name("cogimg")), "predict", "--ckpt", str(ckpt),
               "--input", str(case), "--out", str(out / f"cli_{tta}"), "--device", device,
               "--tta", tta, "--overwrite"]
        cmd += ["--sw-batch-size", str(sw_batch_size)] if sw_batch_size else []
        result[f"cogimg_predict_{tta}"] = dict(zip(("wall_s", "cpu_s"), run_timed(cmd, env)))
    return result


def stage_times(ckpt: Path, case: Path, out: Path, device: str, repeats: int,
                sw_batch_size: int | None) -> tuple[dict, dict]:
    """Per-stage seconds of one case in this process, and the before/after comparison."""
    from cogimg.data.bids import load_dataset
    from cogimg.diseases import get_preset
    from cogimg.inference import (
        apply_inference_settings,
        load_task,
        mask_report,
        preprocessed_subjects,
        preprocessing_config,
        subjects_from_input,
        to_native,
    )
    from cogimg.io import atomic_save_nifti

    stages = {}

    def stage(name, fn):
        wall, cpu, result = timed(fn)
        stages[name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
        return result

    task, data = stage("checkpoint", lambda: load_task(ckpt))
    apply_inference_settings(task, ckpt, sw_batch_size=sw_batch_size)
    task.to(device)
    preset, modalities = get_preset(data["preset"]), tuple(data["modalities"])
    # before: the BIDS tree was read with every modality of every session (now: the model's)
    stage("read_input_before", lambda: load_dataset(case.parent, required_modalities=modalities))
    subjects = stage("read_input", lambda: subjects_from_input(case, modalities, preset.name))
    frames = preprocessed_subjects(subjects, preprocessing_config(data), modalities, device)
    subject, processed, image = stage("preprocess", lambda: next(frames))
    hp = task.hparams
    common = {"roi_size": task.patch_size, "overlap": hp.sw_overlap,
              "sw_batch_size": hp.sw_batch_size, "sigma_scale": 0.125,
              "channels_last": task.channels_last}
    windows, delta, probs = {}, {}, None
    for tta, axes in (("none", ()), ("flip", (0, 1, 2))):
        kwargs = {**common, "tta_flip_axes": axes}
        paths = {"before": partial(sequential_mirror_predict, task.model, image, **kwargs),
                 "after": partial(sliding_window_predict, task.model, image, **kwargs)}
        best, out_probs = {}, {}
        for _ in range(repeats):  # interleaved, so both see the same machine load
            for name, fn in paths.items():
                wall, cpu, out_probs[name] = timed(fn)
                old_wall, old_cpu = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(wall, old_wall), min(cpu, old_cpu))
        windows[tta] = {f"{name}_{kind}": round(best[name][i], 3) for name in paths
                        for i, kind in enumerate(("wall_s", "cpu_s"))}
        probs = out_probs["after"]
        delta[tta] = float((out_probs["before"] - probs).abs().max())
    native = stage("native_grid", lambda: to_native(probs[0].argmax(0).to(torch.uint8).cpu(),
                                                    processed, is_label=True))
    stage("report", lambda: mask_report(native, subject, preset.label_keys))
    stage("write", lambda: atomic_save_nifti(native, out / "stage_mask.nii.gz"))
    frames.close()
    info = {"input_shape": list(image.shape), "patch_size": list(task.patch_size),
            "sw_overlap": hp.sw_overlap, "sw_batch_size": hp.sw_batch_size,
            "channels_last": task.channels_last, "sliding_windows": windows,
            "max_abs_prob_diff": delta}
    return stages, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/predict_speed"))
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--spacing", type=float, default=2.0, help="mm")
    parser.add_argument("--train-steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="sliding-window timings: best of N")
    parser.add_argument("--sw-batch-size", type=int, default=None,
                        help="windows per forward pass (default: the checkpoint's)")
    parser.add_argument("--no-process", action="store_true", help="skip the subprocess timings")
    parser.add_argument("--results-name", default="predict_speed")
    add_runtime_args(parser, threads=1)
    args = parser.parse_args()
    device = str(apply_runtime(args))
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = ensure_checkpoint(args.out.resolve(), args.subjects, args.spacing, args.train_steps)
    case = next(p for p in sorted((args.out / "cohort").iterdir()) if p.name.startswith("sub-"))
    stages, info = stage_times(ckpt, case, args.out, device, args.repeats, args.sw_batch_size)
    per_case = {}  # the in-process stages with either sliding-window path and input reading
    for tta, w in info["sliding_windows"].items():
        per_case[tta] = {}
        for name in ("before", "after"):
            drop = "read_input" if name == "before" else "read_input_before"
            for kind in ("wall_s", "cpu_s"):
                rest = sum(s[kind] for key, s in stages.items() if key != drop)
                per_case[tta][f"{name}_{kind}"] = round(rest + w[f"{name}_{kind}"], 3)
    process = ({} if args.no_process else
               process_times(ckpt, case, args.out, device, args.threads, args.sw_batch_size))
    payload = {"case": case.name, "spacing_mm": args.spacing, "train_steps": args.train_steps,
               "stages_s": stages, **info, "per_case_s": per_case, "process": process}
    print(json.dumps({k: payload[k] for k in ("stages_s", "sliding_windows",
                                               "max_abs_prob_diff", "per_case_s", "process")},
                     indent=1))
    flip = info["sliding_windows"]["flip"]
    headline = {"flip windows CPU s, batched (after)": flip["after_cpu_s"],
                "flip windows CPU s, sequential (before)": flip["before_cpu_s"],
                "max |dprob|": max(info["max_abs_prob_diff"].values())}
    for name, key in (("imports", "imports"), ("predict --tta none", "cogimg_predict_none"),
                      ("predict --tta flip", "cogimg_predict_flip")):
        if key in process:
            headline[f"{name} CPU s"] = process[key]["cpu_s"]
    write_result(args.results_name, payload, device=device, headline=headline)


if __name__ == "__main__":
    main()
