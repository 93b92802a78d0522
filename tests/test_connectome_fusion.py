"""Structure–function fusion: T1w + connectome on one split, missing connectome at test time,
the YAML through the CLI; and the per-region structure–function coupling features."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cogimg import models
from cogimg.cli import main
from cogimg.data.connectome import ConnectomeDataModule
from cogimg.data.structure_function import StructureFunctionDataModule
from tests.classification_tree import build_classification_tree

CONFIG = (Path(__file__).resolve().parents[1] / "experiments" / "connectome"
          / "ad_fusion_t1_connectome.yaml")
SHAPE = (16, 16, 16)
R, T = 6, 60
TINY = {"backbone": "resnet10_3d", "backbone_kwargs": {"block_inplanes": [4, 8, 8, 8]},
        "connectome_kwargs": {"hidden": [16, 8], "dropout": 0.0}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The classification tree's CN / MCI / AD volumes and series for the same subjects."""
    root = build_classification_tree(tmp_path_factory.mktemp("sf"), n_per_class=5,
                                     diagnoses=("CN", "MCI", "AD"))
    rng = np.random.default_rng(0)
    ids = sorted(p.name for p in root.glob("sub-*"))
    series = {pid: rng.normal(size=(T, R)) for pid in ids}
    return root, SimpleNamespace(subjects=ids, series=series, motion=None,
                                 region_names=[f"r{i}" for i in range(R)])


def _batch(b=4, missing=()):
    g = torch.Generator().manual_seed(0)
    present = torch.tensor([0.0 if i in missing else 1.0 for i in range(b)])
    return {"image": torch.randn(b, 1, *SHAPE, generator=g), "availability": torch.ones(b, 1),
            "connectome": torch.randn(b, R * (R - 1) // 2, generator=g) * present[:, None],
            "connectome_available": present}


@pytest.mark.parametrize("fusion", ["early", "intermediate", "late"])
def test_missing_connectome_is_ignored_not_read(fusion):
    torch.manual_seed(0)
    net = models.get("structure_function_fusion", num_nodes=R, num_outputs=3, modalities=["T1w"],
                     input_shape=SHAPE, fusion=fusion, **TINY).eval()
    x = _batch(missing=(1, 3))
    other = {**x, "connectome": x["connectome"] + 5.0 * torch.tensor([[0.0], [1], [0], [1]])}
    with torch.no_grad(), pytest.warns(UserWarning, match="2 sample.s. lack a connectome"):
        out = net(x)
    with torch.no_grad():
        np.testing.assert_allclose(net(other).numpy(), out.numpy(), atol=1e-6)  # never read
        if fusion == "late":  # the image branch alone: its log-probabilities
            image = net.image(x["image"], x["availability"]).log_softmax(-1)
            np.testing.assert_allclose(out[[1, 3]].numpy(), image[[1, 3]].numpy(), atol=1e-5)
        structure = models.get("structure_function_fusion", num_nodes=R, num_outputs=3,
                               modalities=["T1w"], input_shape=SHAPE, fusion="structure",
                               **TINY)
        assert structure.connectome is None and structure(x).shape == (4, 3)
    with pytest.raises(ValueError, match="structure_function"):
        net(x["image"])


def test_one_split_and_withheld_test_connectomes(cohort, tmp_path):
    root, dataset = cohort
    dm = StructureFunctionDataModule(root, preset="ad", modalities=["T1w"], target_shape=SHAPE,
                                     cache_dir=tmp_path, n_folds=2, test_fraction=0.2,
                                     batch_size=8, augmentation="none",
                                     withhold_connectome=0.5, func_dataset=dataset)
    dm.setup("fit")
    assert dm.connectome.split_path == dm.image.split_path and dm.num_nodes == R
    batch = next(iter(dm.test_dataloader()))
    ids = batch["subject_id"]
    assert sorted(ids) == sorted(dm.connectome.subjects["test"])
    withheld = [s in dm.withheld for s in ids]
    assert sum(withheld) == round(0.5 * len(ids)) >= 1
    assert batch["connectome_available"].tolist() == [0.0 if w else 1.0 for w in withheld]
    for i, sid in enumerate(ids):
        expected = 0.0 if withheld[i] else dm.connectome.features["test"][
            dm.connectome.subjects["test"].index(sid)]
        np.testing.assert_allclose(batch["connectome"][i].numpy(), expected, atol=1e-6)
    train = next(iter(dm.train_dataloader()))
    assert train["connectome_available"].eq(1).all()
    assert train["structure_function"]["image"].shape[1:] == (1, *SHAPE)


def test_fusion_yaml_runs_through_the_cli(cohort, tmp_path, monkeypatch):
    root, dataset = cohort
    monkeypatch.setattr(ConnectomeDataModule, "_load_func", lambda self: dataset)
    assert main(["fit", "--config", str(CONFIG), "--trainer.fast_dev_run", "1",
                 "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar", "false",
                 "--model.init_args.model_kwargs.backbone_kwargs",
                 '{"block_inplanes": [4, 8, 8, 8]}',
                 "--data.init_args.data_root", str(root),
                 "--data.init_args.cache_dir", str(tmp_path / "cache"),
                 "--data.init_args.target_shape", "[16, 16, 16]",
                 "--data.init_args.n_folds", "2", "--data.init_args.batch_size", "4"]) == 0


def test_structure_function_coupling_by_hand():
    from cogimg.data.coupling import (
        coupling_features,
        regional_features,
        structural_similarity,
        structure_function_coupling,
    )

    s = np.array([[0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 1.0, 1.0],
                  [2.0, 1.0, 0.0, 5.0], [3.0, 1.0, 5.0, 0.0]])
    f = np.array([[1.0, 0.2, 0.4, 0.9], [0.2, 1.0, 0.3, 0.3],
                  [0.4, 0.3, 1.0, -0.1], [0.9, 0.3, -0.1, 1.0]])
    c = structure_function_coupling(s, f)
    # region 0: centred (-1, 0, 1) and (-0.3, -0.1, 0.4) → r = 0.7 / sqrt(2 · 0.26) by hand
    assert c[0] == pytest.approx(0.7 / np.sqrt(2 * 0.26))
    # region 1: structural profile (1, 1, 1) is constant → undefined
    assert np.isnan(c[1])
    # region 2: (2, 1, 5) with (0.4, 0.3, -0.1): means 8/3 and 0.2
    a, b = np.array([2, 1, 5]) - 8 / 3, np.array([0.4, 0.3, -0.1]) - 0.2
    assert c[2] == pytest.approx(a @ b / np.sqrt((a @ a) * (b @ b)))
    # one feature: minus the absolute difference of z-scores
    z = (np.array([1.0, 2.0, 4.0]) - 7 / 3) / np.std([1.0, 2.0, 4.0])
    np.testing.assert_allclose(structural_similarity(np.array([1.0, 2.0, 4.0])),
                               -np.abs(z[:, None] - z[None]))
    # regional volume (voxels × 8 mm³) and mean intensity from a label image
    labels = np.zeros((4, 4, 4), int)
    labels[:2], labels[2:, :2] = 1, 2
    image = np.arange(64, dtype=float).reshape(4, 4, 4)
    feats = regional_features(image, labels, [1, 2, 3], voxel_volume_mm3=8.0)
    assert feats[0].tolist() == [32 * 8.0, image[:2].mean()]
    assert feats[1].tolist() == [16 * 8.0, image[2:, :2].mean()] and np.isnan(feats[2, 1])
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    fc = np.stack([np.corrcoef(np.random.default_rng(i).normal(size=(5, 40))) for i in (1, 2)])
    out = coupling_features(list(x), list(fc))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out[1], structure_function_coupling(
        structural_similarity(x[1]), fc[1]))
    with pytest.raises(ValueError, match="must be the same"):
        structure_function_coupling(s, f[:3, :3])
