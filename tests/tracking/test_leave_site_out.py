"""Result files of the leave-site-out protocol (cogimg.tracking.leave_site_out): the CSVs that
``cogimg evaluate`` writes, byte for byte, and their refusal to replace an earlier run."""

from __future__ import annotations

import pandas as pd
import pytest

from cogimg.tracking.leave_site_out import format_leave_site_out, write_leave_site_out

# two held-out sites; in-site 0.9 / 0.8, out-of-site 0.5 / 0.6, adabn 0.7 / 0.7
ROWS = [{"site": s, "variant": v, "scope": sc, "metric": "dice", "value": x, "ci_low": x - 0.1,
         "ci_high": x + 0.1, "n": 4}
        for s, values in (("site-1", (0.9, 0.5, 0.7)), ("site-2", (0.8, 0.6, 0.7)))
        for (v, sc), x in zip((("baseline", "in_site"), ("baseline", "out_of_site"),
                               ("adabn", "out_of_site")), values)]
SUBJECTS = [{"site": "site-1", "variant": "baseline", "scope": "out_of_site",
             "subject_id": "sub-1", "value": 1 / 3}]


def test_results_summary_and_subjects_are_written_as_csv(tmp_path):
    paths = write_leave_site_out(ROWS, SUBJECTS, tmp_path / "out", seed=2)
    assert set(paths) == {"results", "summary", "subjects"}
    results = paths["results"].read_text(encoding="utf-8").splitlines()
    assert results[0] == "site,variant,scope,metric,value,ci_low,ci_high,n"
    assert results[1] == "site-1,baseline,in_site,dice,0.9000,0.8000,1.0000,4"
    assert len(results) == 1 + len(ROWS)
    summary = pd.read_csv(paths["summary"]).set_index("variant")
    # means over sites: in 0.85, out 0.55, adabn 0.7 -> recovers (0.7 - 0.55) / (0.85 - 0.55)
    assert list(summary.index) == ["in-site", "out-of-site", "adabn"]
    assert summary.loc["in-site", "score"] == pytest.approx(0.85)
    assert summary.loc["adabn", "score"] == pytest.approx(0.7)
    assert summary.loc["adabn", "recovered"] == pytest.approx(0.5, abs=1e-4)
    assert paths["subjects"].read_text(encoding="utf-8").splitlines() == [
        "site,variant,scope,subject_id,value,seed", "site-1,baseline,out_of_site,sub-1,0.333333,2"]


def test_an_earlier_run_is_kept_unless_overwrite(tmp_path):
    write_leave_site_out(ROWS, None, tmp_path)
    assert not (tmp_path / "lso_subjects.csv").exists()  # no subject rows, no table
    with pytest.raises(FileExistsError, match="lso_results.csv exists; pass --overwrite"):
        write_leave_site_out(ROWS[:3], None, tmp_path)
    write_leave_site_out(ROWS[:3], None, tmp_path, overwrite=True)
    assert len(pd.read_csv(tmp_path / "lso_results.csv")) == 3


def test_printed_tables():
    text = format_leave_site_out(ROWS)
    results, summary = text.split("\n\n")
    assert results.splitlines()[1].split() == ["site-1", "baseline", "in_site", "dice", "0.900",
                                               "0.800", "1.000", "4"]
    assert summary.splitlines()[0].split()[:2] == ["variant", "score"]
    assert len(summary.splitlines()) == 4
