"""SegmentationTask with the DomainAdaptation add-on: DANN/CORAL/MMD on the U-Net bottleneck,
with the held-out site's patches unlabelled in training (TargetSitePatchDataModule), alone
and composed with a mean teacher."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from cogimg.data.splits import make_leave_site_out_split, save_split
from cogimg.paradigms.adaptation import DomainAdaptation
from cogimg.paradigms.adaptation.datamodule import TargetSitePatchDataModule
from cogimg.paradigms.adaptation.domain import pooled
from cogimg.paradigms.lowlabel import SemiSupervised
from cogimg.tasks.addons import TrainingStep, captured_input
from cogimg.tasks.segmentation import SegmentationTask
from tests.tasks.conftest import SMALL_UNET, build_easy_stroke_tree

PATCH = (16, 16, 16)


@pytest.fixture(scope="module")
def lso(tmp_path_factory):
    """Two-site stroke tree and its leave-site-out split (fold 0 holds out site-1)."""
    tmp = tmp_path_factory.mktemp("seg_adapt")
    root = build_easy_stroke_tree(tmp / "bids", n=8)
    split = tmp / "lso.json"
    save_split(make_leave_site_out_split(root / "participants.tsv", val_fraction=0.25), split)
    return root, split, tmp / "cache"


def _dm(lso, **kw) -> TargetSitePatchDataModule:
    root, split, cache = lso
    return TargetSitePatchDataModule(root, preset="stroke", split_file=split, fold=0, cache_dir=cache,
                                     spacing_mm=4.0, patch_size=PATCH, samples_per_volume=2, queue_length=4,
                                     batch_size=2, num_workers=0, augmentation="none", seed=0, **kw)


def _task(adaptation, *more, **kw) -> SegmentationTask:
    return SegmentationTask(model="unet", patch_size=PATCH, model_kwargs={**SMALL_UNET, "norm": "batch"},
                            addons=[DomainAdaptation(**adaptation), *more], scheduler="constant", **kw)


def _trainer(tmp_path, steps=2) -> L.Trainer:
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, max_steps=steps,
                     limit_val_batches=0, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False)


def test_target_patches_come_from_the_held_out_site_without_labels(lso):
    dm = _dm(lso)
    dm.setup("fit")
    assert set(dm.stream_names()) == {"target", "source_uniform"}
    dm.request_streams({"target": None, "source_uniform": None})
    batch, _, _ = next(iter(dm.train_dataloader()))  # CombinedLoader: (batch, index, loader index)
    target, source, uniform = batch["target"], batch["labelled"], batch["source_uniform"]
    sites = {s["subject_id"]: s["site"] for subset in dm.subjects.values() for s in subset}
    assert "label" not in target and target["image"].shape == (2, 2, *PATCH)
    assert "label" not in uniform and uniform["image"].shape == (2, 2, *PATCH)
    assert source["label"].shape == (2, 1, *PATCH)
    assert {sites[i] for i in target["subject_id"]} == {"site-1"}
    assert {sites[i] for i in uniform["subject_id"]} == {"site-2"}
    assert {s["site"] for s in dm.subjects["train"]} == {"site-2"}


def test_domain_loss_compares_uniform_source_patches_with_target_patches(monkeypatch):
    """With ``source_uniform`` the task loss sees the labelled source patches and the domain
    loss sees only the uniformly placed source and target patches (like against like)."""
    model = _task({"method": "dann", "sites": ["site-1", "site-2"],
                   "feature_module": "model.1.submodule.1.submodule"})
    adaptation = model.addons[0]
    adaptation.setup(model, None, "validate")
    adaptation.bind({"a": "site-2", "b": "site-2", "u": "site-2", "t": "site-1"})
    seen = {}

    def domain_loss(features, domains, progress=1.0):
        seen["features"], seen["domains"] = features, domains
        return features.sum() * 0, {}

    monkeypatch.setattr(adaptation, "domain_loss", domain_loss)
    monkeypatch.setattr(model, "log", lambda *args, **kwargs: None)
    image = lambda n: torch.randn(n, 2, *PATCH)
    batch = {"labelled": {"image": image(2), "label": torch.zeros(2, 1, *PATCH, dtype=torch.long),
                        "subject_id": ["a", "b"]},
             "source_uniform": {"image": image(3), "subject_id": ["u"] * 3},
             "target": {"image": image(2), "subject_id": ["t", "t"]}}
    step = TrainingStep(model, batch)
    adaptation.before_forward(step)
    assert step.forward().shape[0] == 2  # the task's loss sees the labelled patches only
    loss, _ = adaptation.training_loss(step)
    assert torch.isfinite(loss)
    assert seen["domains"].tolist() == [1, 1, 1, 0, 0]  # 3 uniform source (site-2), 2 target (site-1)
    assert seen["features"].shape[:2] == (5, 16)  # the bottleneck map, (N, D, *S)


def test_dann_trains_on_the_bottleneck_and_rebuilds_from_checkpoint(lso, tmp_path):
    L.seed_everything(0)
    model = _task({"method": "dann", "weight": 0.5, "gamma": 0.0})
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=_dm(lso))
    config = model.addons[0].config()
    # SMALL_UNET has 3 levels: the bottleneck is the second skip connection's submodule, whose
    # input is the last encoder stage (16 channels).
    assert config["sites"] == ["site-1", "site-2"] and config["feature_module"] == "model.1.submodule.1.submodule"
    assert model.addons[0].site_classifier[0].in_features == 16
    metrics = trainer.callback_metrics
    assert {"train/dann_loss", "train/supervised_loss", "train/site_accuracy"} <= set(metrics)
    assert torch.isfinite(metrics["train/loss"])
    trainer.save_checkpoint(tmp_path / "dann.ckpt")
    ckpt = torch.load(tmp_path / "dann.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["addons"][0]["init_args"]["sites"] == ["site-1", "site-2"]
    rebuilt = SegmentationTask(**ckpt["hyper_parameters"])  # add-ons rebuilt from class_path
    rebuilt.addons[0].setup(rebuilt, None, "validate")  # what Lightning's configure_model does
    rebuilt.load_state_dict(ckpt["state_dict"])
    w = "addons.0.site_classifier.2.weight"
    assert torch.equal(rebuilt.state_dict()[w], model.state_dict()[w])


def test_site_loss_reaches_the_encoder_reversed_and_not_the_decoder(lso):
    """The domain loss's gradient flows into the encoder (sign flipped by the reversal layer)
    and never into the decoder, which lies after the bottleneck features."""
    L.seed_everything(0)
    model = _task({"method": "dann", "weight": 1.0, "gamma": 0.0, "sites": ["site-1", "site-2"],
                   "feature_module": "model.1.submodule.1.submodule"})
    adaptation = model.addons[0]
    adaptation.setup(model, None, "validate")
    module = model.model.get_submodule(adaptation.options.feature_module)
    image = torch.randn(4, 2, *PATCH)
    domains = torch.tensor([0, 0, 1, 1])
    params = dict(model.model.named_parameters())
    # the first encoder convolution and the decoder's output convolution
    encoder, decoder = params["model.0.conv.unit0.conv.weight"], params["model.2.1.conv.unit0.conv.weight"]

    def grads(reversed_: bool):
        model.zero_grad()
        adaptation.reversal.coeff = 1.0 if reversed_ else -1.0  # -1: an ordinary (non-reversed) path
        with captured_input(module) as store:
            model.model(image)
        logits = adaptation.site_classifier(adaptation.reversal(pooled(store["features"])))
        torch.nn.functional.cross_entropy(logits, domains).backward()
        return encoder.grad.clone(), decoder.grad

    rev_encoder, rev_decoder = grads(True)
    plain_encoder, _ = grads(False)
    assert rev_encoder.abs().sum() > 0 and (rev_decoder is None or rev_decoder.abs().sum() == 0)
    torch.testing.assert_close(rev_encoder, -plain_encoder)


@pytest.mark.parametrize("method", ["coral", "mmd"])
def test_alignment_losses_train_with_target_patches(lso, tmp_path, method):
    L.seed_everything(0)
    model = _task({"method": method, "weight": 1.0})
    trainer = _trainer(tmp_path, steps=1)
    trainer.fit(model, datamodule=_dm(lso))
    value = trainer.callback_metrics[f"train/{method}_loss"]
    assert torch.isfinite(value) and (method == "mmd" or float(value) >= 0.0)  # MMD: the unbiased estimate


def test_adaptation_errors_name_the_problem(lso, tmp_path):
    model = _task({"method": "dann"}, SemiSupervised("mean_teacher"))
    with pytest.raises(ValueError, match=r"need the training stream\(s\) \['unlabelled'\]"):
        _trainer(tmp_path).fit(model, datamodule=_dm(lso))  # label_fraction 1: no unlabelled data
    model = _task({"method": "dann", "feature_module": "encoder"})
    with pytest.raises(ValueError, match="feature_module 'encoder' is not a module of model 'unet'"):
        _trainer(tmp_path).fit(model, datamodule=_dm(lso))


@pytest.mark.parametrize(("stream", "label_fraction"), [("unlabelled", 0.5), ("target", None)])
def test_dann_and_mean_teacher_train_together(lso, tmp_path, stream, label_fraction):
    """The two add-ons compose: one run trains the site classifier (on labelled + target
    patches) and the EMA teacher (on the unlabelled training subjects, or on the target
    site's patches), and logs both terms."""
    L.seed_everything(0)
    mean_teacher = SemiSupervised("mean_teacher", weight=1.0, rampup_steps=0, stream=stream)
    model = _task({"method": "dann", "weight": 0.5, "gamma": 0.0}, mean_teacher)
    dm = _dm(lso, label_fraction=label_fraction)
    trainer = _trainer(tmp_path, steps=3)
    trainer.fit(model, datamodule=dm)
    metrics = trainer.callback_metrics
    assert {"train/dann_loss", "train/mean_teacher_loss", "train/supervised_loss",
            "train/site_accuracy", "train/unsupervised_weight"} <= set(metrics)
    total = metrics["train/supervised_loss"] + metrics["train/dann_loss"] + metrics["train/mean_teacher_loss"]
    torch.testing.assert_close(metrics["train/loss"], total)
    assert set(dm._streams) == {stream, "target", "source_uniform"}
    teacher, student = mean_teacher.teacher.state_dict(), model.model.state_dict()
    assert any(not torch.equal(teacher[k], student[k]) for k in student if student[k].is_floating_point())
    assert not any(k.startswith("addons.1") for k in model.state_dict())  # the teacher is not saved


@pytest.mark.slow  # a real fit through the CLI with the shipped YAML, then predict
def test_shipped_dann_mean_teacher_yaml_fits_through_the_cli_and_predicts(lso, tmp_path, monkeypatch):
    """``experiments/stroke/lso_dann_mt_unet.yaml`` as a user runs it: jsonargparse builds the
    two add-ons, the checkpoint saves their filled-in options, and ``cogimg predict`` loads it
    without them (they only train)."""
    import json
    from pathlib import Path

    from cogimg.cli import main

    monkeypatch.setenv("COGIMG_WANDB", "off")
    root, split, cache = lso
    config = Path(__file__).resolve().parents[2] / "experiments" / "stroke" / "lso_dann_mt_unet.yaml"
    code = main(["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / "runs"),
                 "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                 "--model.init_args.model_kwargs", json.dumps({**SMALL_UNET, "norm": "batch"}),
                 "--data.init_args.data_root", str(root), "--data.init_args.split_file", str(split),
                 "--data.init_args.cache_dir", str(cache), "--data.init_args.spacing_mm", "4.0",
                 "--data.init_args.patch_size", "[16, 16, 16]", "--data.init_args.num_workers", "0",
                 "--data.init_args.samples_per_volume", "2", "--data.init_args.queue_length", "4",
                 "--data.init_args.augmentation", "none"])
    assert code in (0, None)
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    saved = torch.load(ckpt, weights_only=True)
    addons = saved["hyper_parameters"]["addons"]
    assert [a["class_path"].rsplit(".", 1)[1] for a in addons] == ["DomainAdaptation", "SemiSupervised"]
    assert addons[0]["init_args"]["sites"] == ["site-1", "site-2"] and addons[1]["init_args"]["stream"] == "target"
    assert any(k.startswith("addons.0.site_classifier") for k in saved["state_dict"])
    subject = root / "sub-01"
    assert main(["predict", "--ckpt", str(ckpt), "--input", str(subject), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "sub-01_pred_msk.nii.gz").is_file()
