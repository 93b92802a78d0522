"""The code blocks of the documentation pages that the tests run.

A fenced block preceded by ``<!-- test: run -->`` runs in the regular suite, one preceded by
``<!-- test: slow -->`` in the slow test; ``python`` blocks of one page share one namespace
(in page order, like a notebook), ``bash`` blocks are ``cogimg …`` command lines, run
in-process through :func:`cogimg.cli.main` (a line ending in ``\\`` continues on the next).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
TAG = re.compile(r"<!-- test: (run|slow) -->\n```(\w+)\n(.*?)\n```", re.DOTALL)
FENCE = re.compile(r"```(\w+)\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Block:
    page: Path
    tag: str        # "run" or "slow"
    language: str   # "python" or "bash"
    code: str


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def tagged_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    return [Block(page, tag, language, code) for tag, language, code in TAG.findall(text)]


def fenced(page: Path, language: str) -> list[str]:
    """Every fenced block of ``language`` on ``page`` (tagged or not)."""
    return [code for lang, code in FENCE.findall(page.read_text(encoding="utf-8")) if lang == language]


def command_lines(code: str) -> list[list[str]]:
    """The ``cogimg`` command lines of a bash block as argument lists (without ``cogimg``):
    continuations joined, ``&&`` chains split, other programs (``python …``) left out."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        for part in line.split("&&"):
            argv = shlex.split(part, comments=True)
            if argv and argv[0] == "cogimg":
                commands.append(argv[1:])
    return commands


def run_page(page: Path, tag: str, cwd: Path) -> int:
    """Run ``page``'s blocks tagged ``tag`` in ``cwd`` (already the working directory);
    returns how many ran. A command that exits non-zero raises ``AssertionError``."""
    from cogimg.cli import main

    namespace: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for block in tagged_blocks(page):
        if block.tag != tag:
            continue
        if block.language == "python":
            # the documentation's own code, run as a reader would paste it
            exec(compile(block.code, f"{page.relative_to(ROOT)}", "exec"), namespace)  # noqa: S102
        elif block.language == "bash":
            for argv in command_lines(block.code):
                code = main(argv)
                assert code in (0, None), f"{page.name}: `cogimg {shlex.join(argv)}` exited {code} in {cwd}"
        else:
            raise AssertionError(f"{page.name}: a {block.language!r} block is tagged; tag python or bash")
        ran += 1
    return ran
