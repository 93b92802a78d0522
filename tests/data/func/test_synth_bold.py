"""Synthetic BOLD: determinism, disease effects measurable after extraction, edge ground truth,
confound regression removing what was injected."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import SITE, tiny_grid, write_subject, write_tree

from cogimg.data.func import SignalConfig, load_edge_truth, load_func_dataset
from cogimg.data.synth.bold import confounds_table, simulate_bold


def _edges(root, pid):
    return load_edge_truth(root, pid)


def test_same_seed_gives_identical_run_and_files(tmp_path):
    grid = tiny_grid()
    a = write_subject(tmp_path / "a", "sub-01", 7, grid, ad_stage=0.5)
    b = write_subject(tmp_path / "b", "sub-01", 7, grid, ad_stage=0.5)
    c = simulate_bold(np.random.default_rng(8), grid, SITE, 120, 0.5, {}, np.zeros(grid.shape, np.float32))
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    assert confounds_table(a.confounds) == confounds_table(b.confounds)
    for rel in ("sub-01/func/sub-01_task-rest_bold.nii.gz",
                "derivatives/fmriprep/sub-01/func/sub-01_task-rest_desc-confounds_timeseries.tsv",
                "derivatives/groundtruth/sub-01/func/sub-01_task-rest_edges.tsv"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_edge_ground_truth_follows_each_effect(tmp_path):
    grid = tiny_grid()
    lesion = np.zeros(grid.shape, np.float32)
    lesion[8:10] = 1.0  # the whole precentral_l slab (label 5)
    write_tree(tmp_path, {"sub-01": {"seed": 1}, "sub-02": {"seed": 2, "ad_stage": 0.9},
                          "sub-03": {"seed": 3, "pd_loss": {"l": 0.8}},
                          "sub-04": {"seed": 4, "lesion": lesion}}, grid)
    assert _edges(tmp_path, "sub-01").empty  # stage 0, no disease: nothing perturbed
    ad = _edges(tmp_path, "sub-02").set_index(["region_a", "region_b"])
    assert set(ad["effect"]) == {"ad"} and ad.loc[("hippocampus_l", "pcc_l"), "magnitude"] > 0.2
    pd_ = _edges(tmp_path, "sub-03")
    assert set(pd_["effect"]) == {"pd"}
    assert {"putamen_l"} <= set(pd_["region_a"]) | set(pd_["region_b"])
    assert ("putamen_l", "precentral_l") in set(zip(pd_["region_b"], pd_["region_a"])) | set(
        zip(pd_["region_a"], pd_["region_b"]))
    stroke = _edges(tmp_path, "sub-04")
    assert set(stroke["effect"]) == {"stroke"}
    assert (stroke["region_a"] == "precentral_l").all() and (stroke["magnitude"] > 0).all()
    # every edge the parcel had: its own network (SMA), the sensorimotor-correlated visual
    # network and the basal-ganglia regions (sensorimotor loadings); none to the others
    assert set(stroke["region_b"]) == {"sma_l", "v1_l", "putamen_l", "thalamus_l"}


def _corr(x, a, b, names):
    return np.corrcoef(x[:, names.index(a)], x[:, names.index(b)])[0, 1]


def test_ad_weakens_dmn_and_stroke_disconnects_its_parcels(tmp_path):
    grid = tiny_grid()
    lesion = np.zeros(grid.shape, np.float32)
    lesion[8:10] = 1.0  # precentral_l
    subjects = {f"sub-cn{i}": {"seed": 10 + i, "ad_stage": 0.05} for i in range(4)}
    subjects |= {f"sub-ad{i}": {"seed": 20 + i, "ad_stage": 0.9} for i in range(4)}
    subjects |= {f"sub-st{i}": {"seed": 10 + i, "ad_stage": 0.05, "lesion": lesion} for i in range(4)}
    write_tree(tmp_path, subjects, grid)
    ds = load_func_dataset(tmp_path)
    names = ds.region_names
    dmn = [i for i, n in enumerate(ds.networks) if n == "default_mode"]

    def dmn_mean(x):
        c = np.corrcoef(x[:, dmn].T)
        return c[np.triu_indices(len(dmn), 1)].mean()

    cn = [ds.series[f"sub-cn{i}"] for i in range(4)]
    ad = [ds.series[f"sub-ad{i}"] for i in range(4)]
    st = [ds.series[f"sub-st{i}"] for i in range(4)]
    assert np.mean([dmn_mean(x) for x in ad]) < np.mean([dmn_mean(x) for x in cn]) - 0.15
    hip_pcc = [[_corr(x, "hippocampus_l", "pcc_l", names) for x in g] for g in (cn, ad)]
    assert np.mean(hip_pcc[1]) < np.mean(hip_pcc[0]) - 0.2
    # Same seeds with and without the lesion: the lesioned parcel loses its network coupling.
    motor = [_corr(x, "precentral_l", "sma_l", names) for x in cn]
    lesioned = [_corr(x, "precentral_l", "sma_l", names) for x in st]
    assert np.mean(motor) > 0.4 and np.mean(np.abs(lesioned)) < 0.5 * np.mean(motor)
    assert all(abs(s) < m for s, m in zip(lesioned, motor))


def test_confound_regression_reduces_injected_global_signal(func_tree):
    cleaned = load_func_dataset(func_tree)
    raw = load_func_dataset(func_tree, config=SignalConfig(strategy="none"))
    for sid in ("sub-01", "sub-02"):
        conf = pd.read_csv(func_tree / f"derivatives/fmriprep/{sid}/func/"
                           f"{sid}_task-rest_desc-confounds_timeseries.tsv", sep="\t")
        g = conf["global_signal"].to_numpy()

        def share(x, g=g):
            return np.mean([abs(np.corrcoef(g, x[:, r])[0, 1]) for r in range(x.shape[1])])

        assert share(raw.series[sid]) > 0.3
        assert share(cleaned.series[sid]) < 0.5 * share(raw.series[sid])


@pytest.mark.slow
def test_synth_cohort_with_bold_is_deterministic_and_checks_clean(tmp_path, capsys):
    from cogimg.cli import main
    from cogimg.data.func import default_parcellation, find_bold_runs
    from cogimg.data.synth import generate_cohort

    kwargs = {"spacing_mm": 4.0, "sites": 2, "bold": True, "bold_volumes": 60, "progress": False}
    a = generate_cohort(tmp_path / "a", 3, 5, **kwargs)
    b = generate_cohort(tmp_path / "b", 3, 5, **kwargs)
    parc = default_parcellation(a)
    assert {"default_mode", "sensorimotor", "visual", "salience", "basal_ganglia"} <= set(parc.networks)
    assert {"pcc_l", "hippocampus_l", "putamen_r", "precentral_r"} <= set(parc.names)
    runs = find_bold_runs(a)
    assert len(runs) == 3 and {r.n_volumes for r in runs} == {60}
    assert {r.tr_s for r in runs} <= {2.0, 2.5}  # two sites, two TRs
    for rel in [r.bold.relative_to(a) for r in runs] + [r.confounds.relative_to(a) for r in runs]:
        if rel.suffix == ".tsv":
            assert (a / rel).read_bytes() == (b / rel).read_bytes()
        else:
            import nibabel as nib
            np.testing.assert_array_equal(np.asarray(nib.load(a / rel).dataobj),
                                          np.asarray(nib.load(b / rel).dataobj))
    assert main(["check", str(a)]) == 0, capsys.readouterr().out
    assert "Functional (fmriprep): 3 usable run(s) of 3 file(s)" in capsys.readouterr().out
