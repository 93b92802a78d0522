"""The documentation site builds with ``mkdocs build --strict`` (no broken link, no missing
snippet, every API page rendered from the docstrings)."""

from __future__ import annotations

from tests.docs.snippets import ROOT

PACKAGES = ("data", "models", "metrics", "tasks", "inference", "paradigms", "tracking", "clinical")


def test_strict_build_renders_every_page_and_api_package(built_site):
    pages = {p.relative_to(ROOT / "docs").with_suffix("") for p in (ROOT / "docs").rglob("*.md")}
    for page in pages:
        target = built_site / ("index.html" if page.name == "index" else page / "index.html")
        assert target.is_file(), f"docs/{page}.md was not built"
    for package in PACKAGES:
        html = (built_site / "api" / package / "index.html").read_text(encoding="utf-8")
        # mkdocstrings rendered the package and its submodules' objects, with their docstrings
        assert f'id="cogimg.{package}"' in html and html.count('class="doc doc-object') > 5, package
    # the experiment YAML included by a snippet is on the page, not the snippet line
    segmentation = (built_site / "tutorials" / "segmentation" / "index.html").read_text(encoding="utf-8")
    assert "--8&lt;--" not in segmentation and "SegmentationTask" in segmentation
    assert (built_site / "results" / "index.html").is_file()
    # the security page is the README's section (a snippet), not a copy that can drift
    security = (built_site / "security" / "index.html").read_text(encoding="utf-8")
    assert "Configs are code" in security and "Scans are untrusted input" in security
