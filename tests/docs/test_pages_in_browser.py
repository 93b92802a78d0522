"""The HTML pages people open, loaded in headless Chromium: ``report.html`` and
``leaderboard.html`` of a real tiny run (the brain-age tutorial's commands, as written), a
``cogimg clinical`` per-patient report, and the documentation site's home page. Each must
load without console errors or failed requests, every ``<img>`` must have loaded
(``naturalWidth > 0``) and the expected tables must be there. A screenshot of each is written
to the test's temporary folder, or, with ``COGIMG_UPDATE_SCREENSHOTS=1``, to
``docs/assets/screenshots/`` (the docs show them): a test run leaves the tree as it was.
Skipped only without a Chromium binary."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from cogimg.cli import main
from tests.clinical.conftest import make_patient
from tests.docs.browser import check_page
from tests.docs.snippets import DOCS, ROOT, run_page


def screenshots(tmp_path):
    """Where the screenshots go (module docstring)."""
    import os

    if os.environ.get("COGIMG_UPDATE_SCREENSHOTS") == "1":
        return DOCS / "assets" / "screenshots"
    return tmp_path / "screenshots"


def assert_clean(check, tables: int, table_class: str | None = None, images: int = 0):
    assert check.problems() == [], f"{check.url}: {check.problems()}"
    assert check.image_count >= images, f"{check.url}: {check.image_count} images, expected ≥ {images}"
    assert check.tables >= tables, f"{check.url}: {check.tables} tables, expected ≥ {tables}"
    if table_class is not None:
        assert table_class in check.table_classes, f"{check.url}: no <table class={table_class!r}>"


def test_docs_home_page(built_site, chrome, tmp_path):
    check = check_page(chrome, built_site / "index.html", screenshots(tmp_path) / "docs_home.png")
    # the home page's table of the four screenshots, every one of them loaded
    assert_clean(check, tables=1, images=4)


def test_a_missing_image_is_reported_by_name(built_site, chrome, tmp_path):
    site = shutil.copytree(built_site, tmp_path / "site")
    (site / "assets" / "screenshots" / "leaderboard.png").unlink()
    check = check_page(chrome, site / "index.html")
    assert check.broken_images == ["assets/screenshots/leaderboard.png"]
    assert any("leaderboard.png" in problem for problem in check.problems())


@pytest.mark.slow  # the brain-age tutorial end to end, plus two fitted checkpoints for the clinical report
def test_run_reports_and_clinical_report_from_real_runs(chrome, cohorts, checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("COGIMG_WANDB", "off")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    assert run_page(DOCS / "tutorials" / "brain-age.md", "slow", tmp_path) == 1
    runs = tmp_path / "runs" / "brain_age"
    run = next(runs.rglob("manifest.json")).parent
    assert json.loads((run / "manifest.json").read_text())["kind"] == "brain_age"
    board = pd.read_csv(runs / "leaderboard.csv")
    assert board["experiment"].tolist() == ["brain_age_resnet10_t1"] and "mae_mean" in board

    patient = make_patient(tmp_path / "patient-1", cohorts)
    assert main(["clinical", "--seg-ckpt", str(checkpoints["seg"]), "--cls-ckpt", str(checkpoints["cls"]),
                 "--input", str(patient), "--out", str(tmp_path / "clinical"), "--device", "cpu",
                 "--no-progress"]) == 0
    clinical = tmp_path / "clinical" / "patient-1" / "patient-1_report.html"

    shots = screenshots(tmp_path)
    report = check_page(chrome, runs / "report.html", shots / "report.png")
    board_page = check_page(chrome, runs / "leaderboard.html", shots / "leaderboard.png")
    clinical_page = check_page(chrome, clinical, shots / "clinical_report.png")
    # report: the leaderboard table and the learning-curve and leaderboard figures
    assert_clean(report, tables=1, table_class="leaderboard", images=2)
    assert_clean(board_page, tables=1, table_class="leaderboard")
    # clinical: lesions and probabilities tables, the embedded overlays
    assert_clean(clinical_page, tables=2, table_class="t", images=1)
