"""The connectome study (issue 31's Check), plus edge attribution against the ground truth.

Runs ``studies/connectome.yaml`` (tangent + logistic/ridge baseline, MLP, BrainNetCNN, GNN for
AD staging, PD vs control and stroke NIHSS; structure alone and structure + connectome fusion:
T1w for AD, T1w + DAT PET for PD, the lesion map for stroke NIHSS) with
:func:`cogimg.tracking.study.run_study` into ordinary run directories, then scores the
integrated-gradients edge ranking of each seed's trained AD and PD MLP / BrainNetCNN against
the synthetic cohort's perturbed edges (top-k precision vs the exact random expectation), and
writes ``results/connectome[_<preset>].json``: the leaderboard rows (test stage), the comparisons (paired
bootstrap CIs of each deep model vs the tangent baseline, fusion vs the best single modality)
and the edge scores.

    python benchmarks/connectome.py --out runs/studies/connectome [--preset tiny|full]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_study_benchmark, study_test_leaderboard, write_result

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "connectome.yaml"
#: (arm, effect whose edges are the truth)
EXPLAINED = (("ad_mlp", "ad"), ("ad_brainnetcnn", "ad"), ("pd_mlp", "pd"),
             ("pd_brainnetcnn", "pd"))


def load_connectome_task(ckpt: Path):
    """The classification task of a connectome run's checkpoint, weights loaded, eval mode."""
    import torch

    from cogimg.tasks.classification import ClassificationTask

    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    hparams = {k: v for k, v in saved["hyper_parameters"].items() if not k.startswith("_")}
    task = ClassificationTask(**hparams)  # num_nodes is in model_kwargs
    task.load_state_dict(saved["state_dict"])
    return task.eval()


def edge_scores(out: Path, arm: str, effect: str, ks=(5, 10, 20, 50)) -> list[dict]:
    """Each seed's run of ``arm``: IG edge ranking on its test subjects of the diseased class
    (target = that class) against the union of their ground-truth ``effect`` edges."""
    import torch
    import yaml

    from cogimg.data.connectome import ConnectomeDataModule
    from cogimg.data.func import load_edge_truth
    from cogimg.paradigms.explain.edges import score_edge_attribution, truth_edges

    rows = []
    for ckpt in sorted((out / "runs" / arm).glob("seed*/**/checkpoints/last.ckpt")):
        run_dir = ckpt.parent.parent
        args = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["data"]
        dm = ConnectomeDataModule(**args["init_args"])
        dm.setup("test")
        task = load_connectome_task(ckpt)
        target = len(dm.preset.classes) - 1  # the most severe class (AD, PD)
        ids = [s for s, y in zip(dm.subjects["test"], dm.values["test"]) if y == target]
        if not ids:
            continue
        features = dm.features["test"][[dm.subjects["test"].index(s) for s in ids]]
        truth = truth_edges([load_edge_truth(dm.data_root, s) for s in ids], dm.region_names,
                            effect)
        scores = score_edge_attribution(task.model, torch.as_tensor(features), target, truth,
                                        ks=ks)
        rows.append({"arm": arm, "seed_dir": ckpt.relative_to(out).parts[2],
                     "n_subjects": len(ids), **{k: v for k, v in scores.items()
                                                if k != "top_edges"}})
    return rows


def main(argv: list[str] | None = None) -> int:
    import cogimg.tracking.connectome_baseline  # noqa: F401  (registers the baseline runner)
    args, out, study, outputs = run_study_benchmark(STUDY, __doc__.splitlines()[0], argv)

    comparisons = outputs.get("comparisons")
    board = study_test_leaderboard(out, int(study.get("n_boot") or 1000))
    edges = [row for arm, effect in EXPLAINED for row in edge_scores(out, arm, effect)]
    payload = {"study": str(STUDY.relative_to(REPO)), "preset": args.preset, "out": str(out),
               "seeds": study["seeds"] if args.seeds is None else args.seeds,
               "comparisons": [] if comparisons is None else comparisons.to_dict("records"),
               "leaderboard_stage": "test",
               "leaderboard": [] if board is None else board.to_dict("records"),
               "edge_attribution": edges}
    write_result(args.result_name, payload, results_dir=args.results_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
