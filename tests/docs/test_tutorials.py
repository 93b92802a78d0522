"""The documentation's code runs: every block tagged ``<!-- test: run -->`` (Python and
``cogimg`` commands), every untagged ``cogimg`` command line parses with the command's own
parser and names files that exist, and the pages that repeat the README repeat it verbatim.
The blocks tagged ``slow`` (the brain-age tutorial, end to end) run in
``tests/docs/test_pages_in_browser.py``, which then opens what they wrote in Chromium."""

from __future__ import annotations

import re
import shlex

import pytest

from cogimg.cli import LIGHTNING_SUBCOMMANDS, build_parser
from tests.docs.snippets import DOCS, ROOT, command_lines, fenced, pages, run_page, tagged_blocks

TUTORIALS = ["segmentation", "classification", "detection", "regression", "brain-age", "fusion",
             "adaptation", "federated", "lowlabel", "explainability"]
RUNNABLE = [p for p in pages() if any(b.tag == "run" for b in tagged_blocks(p))]


def test_every_tutorial_exists_and_runs_something():
    for name in TUTORIALS:
        page = DOCS / "tutorials" / f"{name}.md"
        assert page.is_file(), page
        assert tagged_blocks(page), f"{page.name} has no block tagged to run"


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(DOCS)))
def test_tagged_blocks_run(page, tmp_path, monkeypatch):
    """Each page's runnable blocks, in a fresh folder (data they write lands there)."""
    from cogimg.models import registry

    monkeypatch.chdir(tmp_path)
    models = dict(registry._REGISTRY)  # a page may register a model; leave the registry as found
    try:
        assert run_page(page, "run", tmp_path) > 0
    finally:
        registry._REGISTRY.clear()
        registry._REGISTRY.update(models)


def test_documented_commands_parse_and_name_existing_configs():
    parser = build_parser()
    checked = 0
    for page in pages():
        for code in fenced(page, "bash"):
            for argv in command_lines(code):
                where = f"docs/{page.relative_to(DOCS)}: cogimg {shlex.join(argv)}"
                if argv[0] in LIGHTNING_SUBCOMMANDS:
                    config = argv[argv.index("--config") + 1]
                    assert (ROOT / config).is_file(), f"{where}: {config} does not exist"
                else:
                    try:
                        parser.parse_args(argv)
                    except SystemExit:
                        pytest.fail(f"{where}: does not parse (see the usage above)")
                for value in argv:
                    if re.fullmatch(r"(experiments|sweeps|studies)/[\w/.-]+\.yaml", value):
                        assert (ROOT / value).is_file(), f"{where}: {value} does not exist"
                checked += 1
    assert checked >= 30


def _readme_commands() -> dict[str, str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return {name: re.search(rf"<!-- {name}-command -->\n```bash\n(.*?)\n```", readme, re.DOTALL).group(1)
            for name in ("main", "test")}


def test_getting_started_repeats_the_readme_commands_verbatim():
    commands = fenced(DOCS / "getting-started.md", "bash")
    assert commands == [_readme_commands()["main"], _readme_commands()["test"]]


def test_sbatch_script_repeats_the_readme_verbatim():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sbatch = next(c for c in fenced(DOCS / "scaling.md", "bash") if c.startswith("#!/bin/bash"))
    assert f"```bash\n{sbatch}\n```" in readme
