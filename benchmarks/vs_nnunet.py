"""nnU-Net v2 run for real beside cogimg on identical data, at matched wall-clock budgets.

For each training budget (``--budgets-min``, CPU minutes of wall time, one arm after the
other on the same machine, never side by side):

1. **Cohort and split.** A synthetic stroke cohort (``cogimg synth``, stroke patients only,
   medium difficulty) and cogimg's saved split (stratified 5-fold with a 20 % held-out test
   set, fold ``--fold``), written once under ``--out``. Both contenders train on the
   split's train subjects, validate on its val subjects and never see its test subjects.
2. **nnU-Net** (``nnunetv2`` 2.8.x in its own virtual environment, created on first use
   and cached: ``--venv``). The cohort is written in nnU-Net's raw format
   (:mod:`nnunet_support.raw_format`: the raw DWI/ADC NIfTI files, binarised labels),
   ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` plans and preprocesses it, cogimg's split
   goes into ``splits_final.json``, and ``nnUNetv2_train … -device cpu`` trains
   ``nnUNetTrainer_WallBudget`` (``nnunet_support/trainers``: nnU-Net's default recipe,
   stopped by wall time with its poly schedule over the budget). ``nnUNetv2_predict
   -device cpu`` predicts the test subjects with mirroring (nnU-Net's default) and without
   (``--disable_tta``).
3. **cogimg** trains its default recipe (``--config``, experiments/stroke/seg_unet.yaml)
   for the same budget (``trainer.max_time``, learning rate annealed by wall time as in
   ``benchmarks/seg_time_to_dice.py``) into a run directory, chooses its lesion-size
   threshold on the validation subjects (``cogimg postprocess``, nnU-Net's post-processing
   rule) and predicts the same subjects with the product's own command, ``cogimg predict
   --tta flip`` (mirroring over all three axes, as nnU-Net's) and ``--tta none``, run and
   measured like ``nnUNetv2_predict``. Predictions are made without the threshold
   (``--min-lesion-ml 0``) and scored twice: as they are (``cogimg``, comparable with
   nnU-Net's ``nnUNetv2_predict`` output, which is not post-processed here) and with the
   chosen threshold applied (``cogimg+pp``, the product's default pipeline).
4. **Scoring** (``nnunet_support/scoring.py``). Both contenders' masks (native grid) are
   scored against the cohort's lesion masks with
   :func:`cogimg.metrics.segmentation.segmentation_report`: Dice, lesion F1, absolute volume
   difference (AVD, mL), absolute lesion-count difference (ALD), HD95 (mm), each with a
   subject-bootstrap 95 % CI (:func:`cogimg.metrics.bootstrap.mean_ci`) and the paired
   difference cogimg − nnU-Net with its CI
   (:func:`cogimg.metrics.bootstrap.paired_mean_ci`), for ``cogimg`` and ``cogimg+pp``. Also
   reported: training wall time, inference wall time per case (process wall time over the
   cases, start-up and model loading included, the same way for both), peak RSS of each
   child process tree. The real ISLES'22 case (``--real``) is predicted and scored by both
   models trained on the synthetic cohort.
5. **Where training time goes.** One training step of each network alone on a random batch
   (``nnunet_support/step_time.py``, in each contender's own environment, the batch and
   patch each trained with; cogimg in float32 and bf16-mixed) beside the seconds per
   iteration each spent within the budget.

Outputs: ``results/vs_nnunet.json`` (:func:`_common.write_result`), a Dice-vs-training-time
figure (``<out>/vs_nnunet_dice_vs_time.png``), a markdown table on stdout. Steps whose
outputs exist are skipped, so an interrupted run resumes.

    python benchmarks/vs_nnunet.py --threads 2                # 120 subjects, 2 mm, 10 + 20 min
    python benchmarks/vs_nnunet.py --subjects 24 --spacing 3 --budgets-min 2 4   # smoke run

Both contenders run with ``--threads`` torch threads (default 1) and one data-loading worker
process. nnU-Net is never installed into cogimg's environment; ``pip check`` of cogimg's
environment is run at the end and its verdict recorded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from _common import write_result
from nnunet_support.measure import run_measured
from nnunet_support.raw_format import dataset_name, write_raw_dataset, write_splits_final
from nnunet_support.scoring import figure, headline, markdown_table, result_rows, score_arms

REPO = Path(__file__).resolve().parents[1]
TRAINERS = Path(__file__).resolve().parent / "nnunet_support" / "trainers"
TRAINER = "nnUNetTrainer_WallBudget"
NNUNET_REQUIREMENT = "nnunetv2==2.8.*"


# --------------------------------------------------------------------------- data and split


def ensure_cohort(data: Path, subjects: int, spacing: float, seed: int) -> None:
    """Generate the stroke-only cohort with ``cogimg synth`` unless ``data`` holds one."""
    if (data / "participants.tsv").is_file():
        return
    subprocess.run([str(Path(sys.executable).with_name("cogimg")), "synth", "--out", str(data),
                    "--subjects", str(subjects), "--spacing", str(spacing), "--seed", str(seed),
                    "--diseases", "stroke", "--proportions", "CN=0,stroke=1",
                    "--difficulty", "medium", "--workers", "1", "--no-progress"], check=True)


def ensure_split(data: Path, path: Path, seed: int):
    """cogimg's split of ``data`` (made once, saved at ``path``): what PatchDataModule makes
    by default (stratified by diagnosis, 5 folds, 20 % test)."""
    from cogimg.data.participants import read_participants
    from cogimg.data.splits import load_split, make_kfold_split, save_split

    if not path.is_file():
        table = read_participants(data / "participants.tsv")
        save_split(make_kfold_split(table, n_folds=5, test_fraction=0.2, stratify="diagnosis",
                                    seed=seed), path)
    return load_split(path)


# --------------------------------------------------------------------------- nnU-Net side


def ensure_venv(venv: Path) -> Path:
    """nnU-Net's own virtual environment (created and installed on first use)."""
    exe = venv / "bin" / "nnUNetv2_train"
    if exe.is_file():
        return venv
    base = getattr(sys, "_base_executable", None) or shutil.which("python3")
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", NNUNET_REQUIREMENT], check=True)
    if not exe.is_file():
        raise FileNotFoundError(f"{exe} missing after installing {NNUNET_REQUIREMENT}")
    return venv


def nnunet_env(root: Path, results: Path, threads: int) -> dict[str, str]:
    return {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
            "nnUNet_results": str(results), "nnUNet_extTrainer": str(TRAINERS),
            "nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1", "nnUNet_compile": "false",
            "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "COGIMG_NNUNET_THREADS": str(threads), "PYTHONDONTWRITEBYTECODE": "1"}


def nnunet_predict(venv: Path, env: dict, dataset_id: int, images: Path, out: Path,
                   mirror: bool, log: Path) -> dict:
    cmd = [str(venv / "bin" / "nnUNetv2_predict"), "-i", str(images), "-o", str(out),
           "-d", str(dataset_id), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER,
           "-device", "cpu", "-npp", "1", "-nps", "1"] + ([] if mirror else ["--disable_tta"])
    return run_measured(cmd, env, log)


# --------------------------------------------------------------------------- cogimg side


def cogimg_train(config: Path, data: Path, split: Path, run_dir: Path, budget_s: float,
                 val_every: int) -> None:
    """(Runs in the child process.) Fit ``config`` for ``budget_s`` seconds into ``run_dir``
    and save the final weights as ``final.ckpt`` in the run's checkpoint folder (beside its
    ``config.yaml``'s folder, where ``cogimg postprocess`` finds the validation split)."""
    from lightning.pytorch.callbacks import Callback
    from seg_time_to_dice import TimeBudgetCosine

    from cogimg.tracking.experiment import run_experiment

    class SaveFinal(Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            trainer.save_checkpoint(Path(trainer.checkpoint_callback.dirpath) / "final.ckpt")

    run_experiment(config, run_dir, name=f"vs_nnunet_{run_dir.name}", budget_s=budget_s,
                   callbacks=[TimeBudgetCosine(budget_s), SaveFinal()],
                   overrides=["--data.init_args.data_root", str(data),
                              "--data.init_args.split_file", str(split),
                              "--data.init_args.fold", "0",
                              "--data.init_args.cache_dir",
                              str(run_dir.parent.parent / "cogimg_cache"),
                              "--trainer.max_epochs", "-1",
                              "--model.init_args.scheduler", "constant",
                              "--trainer.check_val_every_n_epoch", str(val_every)])


def cogimg_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "COGIMG_WANDB": "off"}


def child(args_list: list[str], threads: int, log: Path) -> dict:
    return run_measured([sys.executable, __file__, *args_list], cogimg_env(threads), log)


def cogimg_predict(ckpt: Path, cases: Path, out: Path, mirror: bool, threads: int,
                   log: Path) -> dict:
    """``cogimg predict`` on the case folders under ``cases`` (``--tta flip`` or ``none``), on
    the CPU like ``nnUNetv2_predict -device cpu``; masks land at
    ``<out>/<subject_id>_pred_msk.nii.gz``."""
    cmd = [str(Path(sys.executable).with_name("cogimg")), "predict", "--ckpt", str(ckpt),
           "--input", str(cases), "--out", str(out), "--device", "cpu",
           "--tta", "flip" if mirror else "none", "--min-lesion-ml", "0", "--overwrite"]
    return run_measured(cmd, cogimg_env(threads), log)


def cogimg_postprocess(ckpt: Path, threads: int, log: Path) -> dict:
    """``cogimg postprocess`` for ``ckpt`` (its run's validation subjects): the measured run
    and the chosen ``min_lesion_ml``."""
    from cogimg.inference.postprocess import choice_path

    cmd = [str(Path(sys.executable).with_name("cogimg")), "postprocess", "--ckpt", str(ckpt),
           "--device", "cpu", "--overwrite"]
    measured = run_measured(cmd, cogimg_env(threads), log)
    choice = json.loads(choice_path(ckpt).read_text(encoding="utf-8"))
    return {**measured, "min_lesion_ml": choice["min_lesion_ml"], "table": choice["table"]}


# --------------------------------------------------------------------------- orchestration


def cached(path: Path, make, *make_args) -> dict:
    """``make(*make_args)`` once, its JSON kept at ``path`` (a rerun reads it back)."""
    from cogimg.io import atomic_write_text

    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    value = make(*make_args)
    atomic_write_text(path, json.dumps(value, indent=2))
    return value


def per_case(run, run_args: tuple, n: int) -> dict:
    """``run(*run_args)``'s measurements plus its wall time per case over ``n`` cases."""
    measured = run(*run_args)
    return {**measured, "per_case_s": round(measured["wall_s"] / n, 2)}


def run_budget(args, minutes: float, venv: Path, nn_root: Path, name: str,
               inputs: dict[str, dict[str, Path]], cases: dict[str, Path],
               real_truths: dict[str, Path]) -> dict:
    """Both arms at one budget: training, predictions (mirror on/off), measurements.

    ``inputs[where]`` holds the ``"nnunet"`` image folder and the ``"cogimg"`` batch of case
    folders of the ``"test"`` and ``"real"`` subjects; ``cases`` and ``real_truths`` map their
    subject IDs to truth masks."""
    tag = f"{minutes:g}min"
    budget_s = minutes * 60
    out = args.out / f"budget_{tag}"
    out.mkdir(parents=True, exist_ok=True)
    results = nn_root / f"results_{tag}"
    env = nnunet_env(nn_root, results, args.threads)
    record: dict = {"budget_min": minutes}

    # nnU-Net: train, then predict test and real cases.
    fold_dir = results / name / f"{TRAINER}__nnUNetPlans__3d_fullres" / "fold_0"

    def nn_train():
        m = run_measured([str(venv / "bin" / "nnUNetv2_train"), str(args.dataset_id),
                          "3d_fullres", "0", "-tr", TRAINER, "-device", "cpu"],
                         {**env, "COGIMG_NNUNET_BUDGET_S": str(budget_s)},
                         out / "nnunet_train.log")
        return {**m, **json.loads((fold_dir / "budget.json").read_text())}

    record["nnunet_train"] = cached(out / "nnunet_train.json", nn_train)
    # cogimg: train (own process), then predict.
    run_dir = out / "cogimg"

    def cg_train():
        m = child(["--cogimg-train", str(run_dir), "--budget-s", str(budget_s),
                   "--data", str(args.data), "--split", str(args.split),
                   "--config", str(args.config), "--val-every", str(args.val_every)],
                  args.threads, out / "cogimg_train.log")
        r = json.loads((run_dir / "result.json").read_text())
        return {**m, "train_s": r["train_s"], "steps": r["steps"], "run_dir": r["run_dir"],
                "val_metrics": r["metrics"], "curve": r["curve"]}

    record["cogimg_train"] = cached(out / "cogimg_train.json", cg_train)
    ckpt = Path(record["cogimg_train"]["run_dir"]) / "checkpoints" / "final.ckpt"
    record["cogimg_postprocess"] = cached(out / "cogimg_postprocess.json", cogimg_postprocess,
                                          ckpt, args.threads, out / "cogimg_postprocess.log")
    min_lesion_ml = record["cogimg_postprocess"]["min_lesion_ml"]

    for mirror in (True, False):
        tta = "mirror" if mirror else "no_tta"
        for where, truths in (("test", cases), ("real", real_truths)):
            if not truths:
                continue
            key = f"{where}_{tta}"
            # cogimg_cli_*: predictions of ``cogimg predict`` (a run directory resumed from
            # before it was used holds the older helper's, which are not reused)
            nn_pred, cg_pred = out / "pred" / f"nnunet_{key}", out / "pred" / f"cogimg_cli_{key}"
            nn_cmd = (venv, env, args.dataset_id, inputs[where]["nnunet"], nn_pred, mirror,
                      out / f"nnunet_predict_{key}.log")
            record[f"nnunet_predict_{key}"] = cached(
                out / f"nnunet_predict_{key}.json", per_case, nnunet_predict, nn_cmd, len(truths))
            cg_cmd = (ckpt, inputs[where]["cogimg"], cg_pred, mirror,
                      args.threads, out / f"cogimg_predict_{key}.log")
            record[f"cogimg_predict_{key}"] = cached(
                out / f"cogimg_cli_predict_{key}.json", per_case, cogimg_predict, cg_cmd,
                len(truths))
            record[f"scores_{key}"] = score_arms(cg_pred, nn_pred, truths, min_lesion_ml,
                                                 args.n_boot)
    return record


def network_step_times(args, venv: Path, plans_path: Path, budgets: list[dict]) -> dict:
    """Each contender's network alone (``nnunet_support/step_time.py`` in its own interpreter,
    ``--threads`` threads, the batch and patch it trained with) beside the seconds per
    training iteration it spent within each budget: the difference is data loading,
    augmentation and logging."""
    import yaml

    data = yaml.safe_load(args.config.read_text(encoding="utf-8"))["data"]["init_args"]
    support = Path(__file__).resolve().parent / "nnunet_support" / "step_time.py"
    out = {}
    for tool, python, extra in (
            ("nnunet", venv / "bin" / "python", ["--plans", str(plans_path)]),
            ("cogimg", Path(sys.executable), ["--patch", *map(str, data["patch_size"]),
                                              "--batch", str(data["batch_size"])])):
        path = args.out / f"step_time_{tool}.json"
        if not path.is_file():
            run_measured([str(python), str(support), tool, *extra, "--threads", str(args.threads),
                          "--out", str(path)], cogimg_env(args.threads),
                         args.out / f"step_time_{tool}.log")
        out[tool] = json.loads(path.read_text(encoding="utf-8"))
        for rec in budgets:
            train = rec[f"{tool}_train"]
            steps = train["iterations"] if tool == "nnunet" else train["steps"]
            out[tool][f"iteration_s_{rec['budget_min']:g}min"] = round(train["train_s"] / steps, 3)
    return out


def prepare_inputs(subjects, where: str, nn_root: Path, modalities, label_keys
                   ) -> tuple[dict[str, Path], dict[str, Path]]:
    """The ``subjects``' raw images as nnU-Net inputs (``<nn_root>/inputs/<where>/nnunet``)
    and as cogimg case folders (``…/cogimg/<subject_id>/``); returns those two folders and
    the subjects' truth masks by ID (subjects without one are left out)."""
    from nnunet_support.raw_format import case_files, write_case, write_case_folder

    folders = {arm: nn_root / "inputs" / where / arm for arm in ("nnunet", "cogimg")}
    truths = {}
    for subject in subjects:
        images, label = case_files(subject, modalities, label_keys)
        if label is None:
            continue
        sid = subject["subject_id"]
        write_case(images, None, sid, folders["nnunet"], None)
        write_case_folder(images, modalities, folders["cogimg"] / sid)
        truths[sid] = label
    return folders, truths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/vs_nnunet/run"))
    parser.add_argument("--data", type=Path, help="cohort folder (default <out>/cohort)")
    parser.add_argument("--subjects", type=int, default=120)
    parser.add_argument("--spacing", type=float, default=2.0, help="mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets-min", type=float, nargs="+", default=[10.0, 20.0])
    parser.add_argument("--venv", type=Path, help="nnU-Net's venv (default <out>/nnunet-venv)")
    parser.add_argument("--dataset-id", type=int, default=501)
    parser.add_argument("--config", type=Path, default=REPO / "experiments/stroke/seg_unet.yaml")
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared/data/isles22")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both arms")
    parser.add_argument("--val-every", type=int, default=2, help="cogimg: validate every N epochs")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--results-name", default="vs_nnunet")
    parser.add_argument("--note", default="", help="how the machine was used (recorded)")
    # internal: the child processes
    parser.add_argument("--cogimg-train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget-s", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--split", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cogimg_train:
        cogimg_train(args.config, args.data, args.split, args.cogimg_train, args.budget_s,
                     args.val_every)
        return

    from cogimg.data.bids import load_dataset
    from cogimg.diseases import get_preset

    args.out = args.out.resolve()
    args.data = (args.data or args.out / "cohort").resolve()
    args.split = args.out / "split.json"
    ensure_cohort(args.data, args.subjects, args.spacing, args.seed)
    split = ensure_split(args.data, args.split, args.seed)
    fold = split.fold(0)
    preset = get_preset("stroke")
    modalities = list(preset.modalities)
    ds = load_dataset(args.data, modalities=modalities)
    nn_root = args.out / "nnunet"
    name = dataset_name(args.dataset_id)
    raw = nn_root / "raw" / name
    if not (raw / "dataset.json").is_file():
        write_raw_dataset(ds.subjects, raw, fold["train"] + fold["val"], fold["test"],
                          modalities, preset.label_keys)
    inputs, cases = {}, {}
    inputs["test"], cases = prepare_inputs([ds.subject(sid) for sid in fold["test"]], "test",
                                           nn_root, modalities, preset.label_keys)
    real_truths: dict[str, Path] = {}
    if args.real is not None and (args.real / "participants.tsv").is_file():
        real = load_dataset(args.real, modalities=modalities).subjects
        inputs["real"], real_truths = prepare_inputs(real, "real", nn_root, modalities,
                                                     preset.label_keys)
    venv = ensure_venv((args.venv or args.out / "nnunet-venv").resolve())
    env = nnunet_env(nn_root, nn_root / "results_plan", args.threads)
    plan = cached(args.out / "nnunet_plan.json", lambda: run_measured(
        [str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(args.dataset_id),
         "-c", "3d_fullres", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"], env,
        args.out / "nnunet_plan.log"))
    write_splits_final(nn_root / "preprocessed" / name / "splits_final.json", [fold])
    plans = json.loads((nn_root / "preprocessed" / name / "nnUNetPlans.json").read_text())
    budgets = [run_budget(args, minutes, venv, nn_root, name, inputs, cases, real_truths)
               for minutes in args.budgets_min]
    step_times = network_step_times(args, venv, nn_root / "preprocessed" / name /
                                    "nnUNetPlans.json", budgets)
    fig_path = args.out / "vs_nnunet_dice_vs_time.png"
    figure(budgets, fig_path)
    pip_check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True,
                               text=True, check=False)
    rows = result_rows(budgets)
    payload = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "note": args.note,
        "cohort": {"path": str(args.data), "subjects": args.subjects, "spacing_mm": args.spacing,
                   "seed": args.seed, "n_train": len(fold["train"]), "n_val": len(fold["val"]),
                   "n_test": len(fold["test"]), "test_subjects": fold["test"]},
        "config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO)
                      else args.config),
        "threads": args.threads, "nnunet_requirement": NNUNET_REQUIREMENT,
        "nnunet_plan": {"preprocess": plan,
                        "3d_fullres": {k: plans["configurations"]["3d_fullres"].get(k) for k in
                                       ("patch_size", "batch_size", "spacing",
                                        "median_image_size_in_voxels")}},
        "cogimg_postprocess": [{"budget_min": rec["budget_min"],
                                "min_lesion_ml": rec["cogimg_postprocess"]["min_lesion_ml"],
                                "wall_s": rec["cogimg_postprocess"]["wall_s"]}
                               for rec in budgets],
        "real_subjects": sorted(real_truths),
        "network_step": step_times,
        "table": rows, "figure": str(fig_path),
        "pip_check_cogimg_venv": {"returncode": pip_check.returncode,
                                  "output": pip_check.stdout.strip()},
        # every measurement and per-subject score, not rendered in results/README.md
        "details": budgets,
    }
    write_result(args.results_name, payload, headline=headline(budgets))
    print(markdown_table(rows, "test"))
    print()
    print(markdown_table(rows, "real"))
    print(f"\nfigure: {fig_path}\npip check (cogimg venv): {pip_check.stdout.strip()}")


if __name__ == "__main__":
    main()
