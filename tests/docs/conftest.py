"""Fixtures of the documentation tests: the site built once per test session (shared by the
pytest-xdist workers through a file lock), and the Chromium executable (skip when absent).

The checkpoints and patient folders of ``cogimg clinical`` come from the clinical tests'
fixtures, re-exported here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from tests.clinical.conftest import checkpoints, cohorts  # noqa: F401  (fixtures)
from tests.docs.browser import browser, chromium_path
from tests.docs.snippets import ROOT


def build_site(out: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the repository's site into ``out``."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
                          check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """The built site's folder; a failed strict build fails every test that uses it, with
    mkdocs' output."""
    # Under pytest-xdist every worker's base folder sits in the session's one: build there once.
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    site, done = shared / "docs_site", shared / "docs_site.ok"
    with FileLock(str(shared / "docs_site.lock")):
        if not done.exists():
            result = build_site(site)
            assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
            done.write_text("ok\n", encoding="utf-8")
    return site


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium binary (looked for $COGIMG_CHROMIUM, chromium, chromium-browser, "
                    "google-chrome): on Debian `apt-get install -y chromium`; .ci/run installs it")
    return path


@pytest.fixture(scope="session")
def chrome(chromium):
    """One headless Chromium (a Playwright ``Browser``) for the session's page checks."""
    with browser(chromium) as launched:
        yield launched
