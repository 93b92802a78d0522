"""Tests for cogimg.data.splits and the ``cogimg split`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cogimg import cli
from cogimg.data.participants import (
    participants_hash,
    read_participants,
    sessions_table,
    subjects_for,
)
from cogimg.data.splits import (
    LeakageError,
    Split,
    SplitFormatError,
    check_leakage,
    load_split,
    make_kfold_split,
    make_leave_site_out_split,
    save_split,
    split_summary,
)

SHARED_ISLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "isles22"


def cohort(n: int = 60, seed: int = 0) -> pd.DataFrame:
    """participants.tsv-like table indexed by participant_id: 3 diagnoses × 3 sites."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "participant_id": [f"sub-{i:03d}" for i in range(n)],
        "diagnosis": np.array(["CN", "MCI", "AD"])[np.arange(n) % 3],
        "site": rng.choice(["siteA", "siteB", "siteC"], n),
        "age": rng.uniform(55, 90, n).round(1),
    }).set_index("participant_id")


def scans(participants: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """One row per session: 1–3 sessions per participant, diagnosis/site repeated."""
    rng = np.random.default_rng(seed)
    rows = [{"participant_id": pid, "session_id": f"ses-{s:02d}",
             "subject_id": f"{pid}_ses-{s:02d}",
             "diagnosis": row.diagnosis, "site": row.site}
            for pid, row in participants.iterrows() for s in range(1, rng.integers(2, 5))]
    return pd.DataFrame(rows)


def write_tsv(path: Path, table: pd.DataFrame) -> Path:
    table.reset_index().to_csv(path, sep="\t", index=False)
    return path


# --------------------------------------------------------------------------- kfold


def test_kfold_stratified_and_every_participant_val_once():
    table = cohort(61)
    split = make_kfold_split(table, n_folds=5, test_fraction=0.2, seed=3)
    dx = table["diagnosis"]
    # test: 20 % of each class (sklearn rounds: 61 * 0.2 → 13)
    assert len(split.test) == 13
    for cls, n in dx.value_counts().items():
        assert abs((dx[split.test] == cls).sum() - n * 0.2) <= 1
    dev = sorted(set(table.index) - set(split.test))
    vals = [i for f in split.folds for i in f["val"]]
    assert sorted(vals) == dev  # each dev participant is val in exactly one fold
    dev_counts = dx[dev].value_counts()
    for k in range(5):
        fold = split.fold(k)
        assert sorted(fold["train"] + fold["val"]) == dev
        assert fold["test"] == split.test
        for cls, n in dev_counts.items():
            assert abs((dx[fold["val"]] == cls).sum() - n / 5) < 1  # within ±1 of ideal
    check_leakage(split)
    assert split.fold("fold2") == split.fold(2)


def test_kfold_groups_sessions_of_one_participant():
    table = scans(cohort(45))
    assert table["participant_id"].duplicated().any()
    split = make_kfold_split(table, n_folds=3, seed=0)
    assert set(split.test).isdisjoint(i for f in split.folds for i in f["train"] + f["val"])
    assert sorted(split.test + split.fold(0)["train"] + split.fold(0)["val"]) == sorted(
        table["participant_id"].unique())
    check_leakage(split, sessions=table)
    # the scans table gives the same split as the participants table (one unit per ID)
    per_participant = table.drop_duplicates("participant_id")
    assert make_kfold_split(per_participant, n_folds=3).to_dict() == split.to_dict()


def test_kfold_deterministic_row_order_invariant_and_seeded(tmp_path):
    table = cohort()
    a = save_split(make_kfold_split(table, seed=7), tmp_path / "a.json")[0].read_bytes()
    shuffled = table.sample(frac=1.0, random_state=1)
    b = save_split(make_kfold_split(shuffled, seed=7), tmp_path / "b.json")[0].read_bytes()
    assert a == b
    assert make_kfold_split(table, seed=8).to_dict() != json.loads(a)


def test_kfold_without_test_set_and_without_stratification():
    split = make_kfold_split(cohort(20), n_folds=4, test_fraction=0.0, stratify=None)
    assert split.test == []
    assert sorted(len(f["val"]) for f in split.folds) == [5, 5, 5, 5]


def test_class_too_small_to_stratify_is_a_clear_error():
    table = cohort(30)
    table.loc[["sub-000", "sub-001", "sub-002"], "diagnosis"] = "PD"  # 3 PD < 5 folds
    with pytest.raises(ValueError, match=r"class 'PD' has 3 participant_id value\(s\), need ≥ 6"):
        make_kfold_split(table, n_folds=5)
    assert len(make_kfold_split(table, n_folds=5, stratify=None).folds) == 5


def test_missing_columns_and_labels_are_named():
    with pytest.raises(ValueError, match=r"no column\(s\) \['diagnosis'\]"):
        make_kfold_split(cohort().drop(columns="diagnosis"))
    table = cohort()
    table.loc["sub-004", "diagnosis"] = None
    with pytest.raises(ValueError, match="missing diagnosis for participant_id.*sub-004"):
        make_kfold_split(table)


def test_participants_hash_ignores_order_and_extra_columns():
    table = cohort()
    h = participants_hash(table)
    assert h == participants_hash(table.sample(frac=1, random_state=0).drop(columns="age"))
    assert h == make_kfold_split(table).participants_hash
    changed = table.copy()
    changed.loc["sub-001", "site"] = "siteZ"
    assert participants_hash(changed) != h


# --------------------------------------------------------------------------- leave-site-out


def test_leave_site_out_one_fold_per_site():
    table = cohort(90)
    split = make_leave_site_out_split(table, val_fraction=0.25, seed=0)
    sites = sorted(table["site"].unique())
    assert split.fold_names == sites and split.test == []
    for site in sites:
        fold = split.fold(site)
        assert set(table.loc[fold["test"], "site"]) == {site}
        assert sorted(fold["test"]) == sorted(table.index[table["site"] == site])
        assert site not in set(table.loc[fold["train"] + fold["val"], "site"])
        assert sorted(fold["train"] + fold["val"] + fold["test"]) == sorted(table.index)
        rest = table.loc[fold["train"] + fold["val"], "diagnosis"].value_counts()
        val = table.loc[fold["val"], "diagnosis"].value_counts()
        for cls, n in rest.items():
            assert abs(val.get(cls, 0) - n * 0.25) <= 1
    check_leakage(split)


def test_leave_site_out_rejects_participant_at_two_sites_and_single_site():
    table = scans(cohort(30))
    moved = table.index[table["participant_id"] == "sub-003"][0]
    table = pd.concat([table, table.loc[[moved]].assign(site="siteQ", session_id="ses-09")])
    with pytest.raises(ValueError, match="participant_id.* with more than one site: sub-003$"):
        make_leave_site_out_split(table)
    with pytest.raises(ValueError, match="≥ 2 values in column 'site'"):
        make_leave_site_out_split(cohort(12).assign(site="only"))


# --------------------------------------------------------------------------- leakage


def base_split(**changes) -> Split:
    data = {"kind": "custom", "test": ["sub-9"],
            "folds": [{"name": "f0", "train": ["sub-1", "sub-2"], "val": ["sub-3"]},
                      {"name": "f1", "train": ["sub-1", "sub-3"], "val": ["sub-2"]}]}
    data.update(changes)
    return Split.from_dict(data)


def test_clean_hand_written_split_passes():
    check_leakage(base_split())


@pytest.mark.parametrize("folds, test, message, ids", [
    ([{"name": "f0", "train": ["sub-1", "sub-2"], "val": ["sub-2"]}], [],
     "fold 'f0': in both train and val: sub-2", ["sub-2"]),
    ([{"name": "f0", "train": ["sub-1"], "val": ["sub-3"]}], ["sub-1", "sub-3"],
     "in both train and held-out test: sub-1", ["sub-1", "sub-3"]),
    ([{"name": "f0", "train": ["sub-1", "sub-1"], "val": ["sub-3"]}], [],
     "fold 'f0' train: listed more than once: sub-1", ["sub-1"]),
    ([{"name": "f0", "train": ["sub-1"], "val": ["sub-3"]}], ["sub-5", "sub-5"],
     "held-out test: listed more than once: sub-5", ["sub-5"]),
    ([{"name": "s", "train": ["sub-1"], "val": ["sub-3"], "test": ["sub-3"]}], [],
     "in both val and test: sub-3", ["sub-3"]),
])
def test_check_leakage_catches_each_kind(folds, test, message, ids):
    with pytest.raises(LeakageError) as info:
        check_leakage(Split.from_dict({"folds": folds, "test": test}))
    assert message in str(info.value)
    assert info.value.ids == ids


def test_check_leakage_with_sessions_catches_session_level_split():
    """The classic error: a split by scan, so one participant's sessions straddle subsets."""
    sessions = pd.DataFrame({
        "participant_id": ["sub-1", "sub-1", "sub-2", "sub-3"],
        "subject_id": ["sub-1_ses-1", "sub-1_ses-2", "sub-2_ses-1", "sub-3_ses-1"]})
    by_scan = Split.from_dict({"group": "subject_id", "folds": [
        {"train": ["sub-1_ses-1", "sub-2_ses-1"], "val": ["sub-1_ses-2", "sub-3_ses-1"]}]})
    check_leakage(by_scan)  # looks clean without the sessions table
    with pytest.raises(LeakageError) as info:
        check_leakage(by_scan, sessions=sessions)
    assert "participant_id 'sub-1' spans ['train', 'val']" in str(info.value)
    assert "sub-1_ses-1 (train), sub-1_ses-2 (val)" in str(info.value)
    assert info.value.ids == ["sub-1_ses-1", "sub-1_ses-2"]


def test_check_leakage_with_sessions_catches_scan_under_two_participants():
    sessions = pd.DataFrame({"participant_id": ["sub-1", "sub-2", "sub-3"],
                             "subject_id": ["scan-A", "scan-A", "scan-B"]})  # a duplicated scan
    with pytest.raises(LeakageError) as info:  # fold f1 puts sub-1 in train, sub-2 in val
        check_leakage(base_split(test=[]), sessions=sessions)
    assert info.value.problems == [
        "fold 'f1': subject_id 'scan-A' spans ['train', 'val']: sub-1 (train), sub-2 (val)"]
    # without a linking column there is nothing to check: an error, not a silent pass
    with pytest.raises(ValueError, match="needs participant_id or 'subject_id'"):
        check_leakage(base_split(), sessions=sessions[["participant_id"]])


def test_generated_splits_pass_sessions_check_from_subject_records():
    table = scans(cohort(30))
    subjects = [dict(r) for r in table.to_dict("records")]
    check_leakage(make_kfold_split(table, n_folds=3), sessions=sessions_table(subjects))


# --------------------------------------------------------------------------- files


def test_save_load_round_trip_tsv_and_refusal_to_overwrite(tmp_path):
    split = make_kfold_split(cohort(), n_folds=3)
    json_path, tsv_path = save_split(split, tmp_path / "splits" / "s.json")
    assert load_split(json_path) == split
    listing = pd.read_csv(tsv_path, sep="\t")
    assert list(listing.columns) == ["participant_id", "fold", "subset"]
    fold1 = listing[listing["fold"] == "fold1"]
    assert sorted(fold1.loc[fold1["subset"] == "val", "participant_id"]) == split.fold(1)["val"]
    assert len(listing) == 3 * len(cohort())
    before = json_path.read_bytes()
    with pytest.raises(FileExistsError, match="made once and reused"):
        save_split(make_kfold_split(cohort(), seed=5), json_path)
    assert json_path.read_bytes() == before
    save_split(make_kfold_split(cohort(), seed=5), json_path, overwrite=True)
    assert json_path.read_bytes() != before
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["s.json", "s.tsv"]  # no temps


def test_save_refuses_leaky_split(tmp_path):
    leaky = base_split(test=["sub-1"])
    with pytest.raises(LeakageError):
        save_split(leaky, tmp_path / "s.json")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("content, key, problem", [
    ("{not json", "not valid JSON", ""),
    ('[1, 2]', "top level", "expected a JSON object, got list"),
    ('{"test": []}', "folds", "missing (required)"),
    ('{"folds": []}', "folds", "non-empty list"),
    ('{"folds": [{"train": ["a"]}]}', "folds[0].val", "missing (required)"),
    ('{"folds": [{"train": "a", "val": []}]}', "folds[0].train", "expected a list of ID strings"),
    ('{"folds": [{"train": ["a", 3], "val": []}]}', "folds[0].train[1]", "got int 3"),
    ('{"folds": [{"train": [], "val": [], "tset": []}]}', "folds[0].tset", "unknown key"),
    ('{"seed": "0", "folds": [{"train": [], "val": []}]}', "seed", "expected an integer"),
    ('{"kind": "random", "folds": [{"train": [], "val": []}]}', "kind", "is not one of"),
    ('{"folds": [{"name": "a", "train": [], "val": []}, {"name": "a", "train": [], "val": []}]}',
     "folds", "unique"),
    ('{"format_version": 2, "folds": [{"train": [], "val": []}]}', "format_version",
     "unsupported"),
])
def test_malformed_split_files_name_file_and_key(tmp_path, content, key, problem):
    path = tmp_path / "mine.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SplitFormatError) as info:
        load_split(path)
    assert str(info.value).startswith(f"{path}: {key}")
    assert problem in str(info.value)


def test_missing_split_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json does not exist"):
        load_split(tmp_path / "nope.json")


def test_fold_lookup_errors():
    split = base_split()
    with pytest.raises(KeyError, match="no fold named 'x'"):
        split.fold("x")
    with pytest.raises(IndexError, match="has 2 folds"):
        split.fold(2)


# --------------------------------------------------------------------------- helpers


def test_subjects_for_filters_and_refuses_to_drop():
    subjects = [{"participant_id": p, "session_id": s} for p, s in
                [("sub-1", "ses-1"), ("sub-1", "ses-2"), ("sub-2", "ses-1"), ("sub-3", "ses-1")]]
    picked = subjects_for(subjects, ["sub-1", "sub-3"])
    assert [(s["participant_id"], s["session_id"]) for s in picked] == [
        ("sub-1", "ses-1"), ("sub-1", "ses-2"), ("sub-3", "ses-1")]
    with pytest.raises(ValueError, match="1 ID.*no subject: sub-7"):
        subjects_for(subjects, ["sub-1", "sub-7"])


def test_subjects_for_torchio_subjects():
    tio = pytest.importorskip("torchio")
    import torch

    image = tio.ScalarImage(tensor=torch.zeros(1, 2, 2, 2))
    subjects = [tio.Subject(t1=image, participant_id=f"sub-{i}", age=60 + i) for i in range(4)]
    assert [s["age"] for s in subjects_for(subjects, ["sub-2", "sub-0"])] == [60, 62]


def test_read_participants_raises_every_error_naming_the_file(tmp_path):
    path = tmp_path / "participants.tsv"
    path.write_text("participant_id\tdiagnosis\tsite\nsub-1\tad\tA\nsub-2\tCN\tn/a\n", encoding="utf-8")
    table = read_participants(path)
    assert table.loc["sub-1", "diagnosis"] == "AD" and table.loc["sub-2", "site"] == "n/a"
    with pytest.raises(ValueError, match="missing site for participant_id.*sub-2"):
        make_leave_site_out_split(table)
    path.write_text("participant_id\tdiagnosis\nsub-1\tAD\nsub-1\tCN\nsub-2\tflu\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        read_participants(path)
    message = str(info.value)
    assert message.startswith(f"{path}: 2 error(s)")
    assert "sub-1: duplicate participant_id" in message and "unknown diagnosis 'flu'" in message


def test_split_summary_counts():
    table = cohort(30)
    summary = split_summary(make_kfold_split(table, n_folds=3), table).set_index(["fold", "subset"])
    assert summary.loc[("fold0", "test"), ("n", "")] == 6
    assert summary.loc[("fold0", "test"), ("diagnosis", "AD")] == 2


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def split_cli(monkeypatch):
    """``cogimg.cli.main`` with only the split subcommand (others are tested in their files)."""
    monkeypatch.setattr(cli, "PLAIN_SUBCOMMANDS", {"split": "split"})
    return cli.main


def test_cli_kfold_writes_split_and_prints_table(tmp_path, split_cli, capsys):
    write_tsv(tmp_path / "participants.tsv", cohort(40))
    out = tmp_path / "s.json"
    argv = ["split", str(tmp_path), "--out", str(out), "--n-folds", "4", "--seed", "2"]
    assert split_cli(argv) == 0
    split = load_split(out)
    assert split.kind == "kfold" and len(split.folds) == 4 and split.seed == 2
    tsv = tmp_path / "participants.tsv"
    assert split.participants_hash == participants_hash(read_participants(tsv))
    printed = capsys.readouterr().out
    assert "fold3" in printed and "siteA" in printed and "MCI" in printed
    assert split == make_kfold_split(cohort(40), n_folds=4, seed=2)
    # an existing split is not replaced without --overwrite
    before = out.read_bytes()
    assert split_cli(["split", str(tmp_path), "--out", str(out), "--seed", "3"]) == 2
    assert "already exist" in capsys.readouterr().err and out.read_bytes() == before
    assert split_cli(["split", str(tmp_path), "--out", str(out), "--seed", "3", "--overwrite"]) == 0
    assert load_split(out).seed == 3


def test_cli_leave_site_out_with_diagnosis_filter(tmp_path, split_cli, capsys):
    tsv = write_tsv(tmp_path / "p.tsv", cohort(60))
    out = tmp_path / "lso.json"
    code = split_cli(["split", str(tsv), "--out", str(out), "--kind", "leave-site-out",
                      "--diagnoses", "cn,AD"])
    assert code == 0, capsys.readouterr().err
    split = load_split(out)
    ids = {i for f in split.folds for i in f["test"]}
    table = cohort(60)
    assert ids == set(table.index[table["diagnosis"].isin(["CN", "AD"])])
    assert split.fold_names == ["siteA", "siteB", "siteC"]


@pytest.mark.parametrize("extra, message, code", [
    (["--n-folds", "3", "--kind", "leave-site-out"], "--n-folds applies to --kind kfold only", 2),
    (["--diagnoses", "PD"], "no participants with diagnosis ['PD']", 1),
    (["--n-folds", "25"], "need ≥ 26", 1),
])
def test_cli_errors_exit_1_for_data_2_for_usage(tmp_path, split_cli, capsys, extra, message, code):
    write_tsv(tmp_path / "participants.tsv", cohort(30))
    out = tmp_path / "s.json"
    assert split_cli(["split", str(tmp_path), "--out", str(out), *extra]) == code
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_missing_participants(tmp_path, split_cli, capsys):
    assert split_cli(["split", str(tmp_path), "--out", str(tmp_path / "s.json")]) == 2
    assert "participants.tsv does not exist" in capsys.readouterr().err


@pytest.mark.real_data
@pytest.mark.skipif(not SHARED_ISLES.is_dir(), reason="../shared/data/isles22 absent")
def test_real_isles_participants_single_site_is_refused_for_leave_site_out():
    table = read_participants(SHARED_ISLES / "participants.tsv")
    assert table.loc["sub-strokecase0001", "diagnosis"] == "stroke"
    with pytest.raises(ValueError, match="≥ 2 values in column 'site'"):
        make_leave_site_out_split(table)
