"""No measured numbers in docstrings or comments: they go stale silently; results are files
(``results/<name>.json``, run directories) rendered by ``benchmarks/render_results.py``.

The rule (applied to each line of every docstring — module, class, function — and every
``#`` comment of the ``.py`` files under ``cogimg/``, ``benchmarks/`` and ``studies/``, and
every ``#`` comment of the YAML configs under ``studies/``, ``experiments/`` and ``sweeps/``):

1. **Table row.** A line with at least two decimal numbers (``\\d+\\.\\d+``) that is laid out
   as a table row: at least two ``|`` cells, or at least two column gaps (runs of 2+ spaces
   between non-space text after the indentation).
2. **Reported measurement.** A line with a number followed by a unit of time, memory,
   speed or ratio (``s``, ``ms``, ``min``, ``h``, ``GB``, ``GiB``, ``MB``, ``MiB``, ``%``,
   ``×``/``x``, ``s/it``, ``s/step``, ``it/s``, ``/s``) — not preceded by a comparison sign or
   "target"/"goal" (a spec), nor a confidence level ("95 % CI", "95 % interval") — on a line
   with a *result verb* ("measured", "took", "reached", "scored", "ran in", "finished in",
   "was/were N"), or anywhere in a paragraph (docstring text between blank lines, or a block
   of consecutive comment lines) that *reports* a run: "took", "ran in", "finished in", or a
   date (``2026-12-02``).
3. **Metric value.** A metric name (Dice, F1, AUC, AUROC, accuracy, balanced accuracy, CPM,
   AP, mAP, MAE, R², ΔR) followed within a few characters by a decimal number, with no
   comparison sign (``≥ ≤ > < >= <= =``) or "target"/"goal"/"threshold" between them (a
   target is a spec, not a measurement).

   The 20 characters before the metric name are checked for those words too ("threshold
   on Dice 0.5"), and a match inside a ````code```` span is an example of an output format
   (``ΔR +0.05 [+0.02, +0.08]``), not a result.

A number is "decimal" when it has digits on both sides of the point. There is no escape
hatch besides :data:`ALLOWLIST`, which holds only the study scripts still awaiting conversion
to ``studies/`` configs.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("cogimg", "benchmarks", "studies")
YAML_ROOTS = ("studies", "experiments", "sweeps")
YAML_COMMENT = re.compile(r"(?:^|\s)(#.*)$")

#: Files not scanned yet, relative to the repository root. Only study scripts whose tables
#: still live in their docstrings; each is being converted to a ``studies/`` config (issue 26)
#: and leaves this list when it is.
ALLOWLIST = frozenset({
})

DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
PIPE_CELLS = re.compile(r"\|[^|]*\|[^|]*\|")
COLUMN_GAP = re.compile(r"\S {2,}(?=\S)")
UNIT = r"(?:s/it|s/step|it/s|/s|ms|min|h|s|GB|GiB|MB|MiB|%|×|x)"
NUMBER_UNIT = re.compile(rf"(?<![\w.])\d+(?:\.\d+)?\s?{UNIT}(?![A-Za-z])")
RESULT_VERB = re.compile(
    r"\b(?:measured|took|reached|scored|ran in|finished in|(?:was|were)\s+\d)",
    re.IGNORECASE)
METRIC = re.compile(
    r"\b(?:Dice|F1|AUC|AUROC|accuracy|balanced accuracy|CPM|mAP|AP|MAE|R²|ΔR)\b"
    r"(?P<between>[^\d\n]{0,12}?)(?<![\w.])\d+\.\d+", re.IGNORECASE)
REPORT = re.compile(
    r"\b(?:took|ran in|finished in)\b|\b20\d\d-[01]\d-[0-3]\d\b",
    re.IGNORECASE)
CONFIDENCE = re.compile(r"\s*(?:CI|interval|confidence|percentile|bootstrap)\b")
SPEC = re.compile(r"[≥≤<>=]|target|goal|threshold", re.IGNORECASE)
CODE_SPAN = re.compile(r"``.+?``")


def _measurements(line: str) -> list[re.Match]:
    """Number-with-unit matches of ``line`` that are not specs (no comparison sign or
    "target"/"goal" in the 12 characters before them)."""
    return [m for m in NUMBER_UNIT.finditer(line)
            if not SPEC.search(line[max(0, m.start() - 12):m.start()])
            and not CONFIDENCE.match(line, m.end())]


def violations(line: str, paragraph_reports: bool = False) -> list[str]:
    """Which rules ``line`` breaks (names; empty when it is clean). ``paragraph_reports``:
    the line's paragraph reports a run (rule 2 then applies to the whole paragraph)."""
    found = []
    decimals = len(DECIMAL.findall(line))
    body = line.strip()
    if decimals >= 2 and (PIPE_CELLS.search(body) or len(COLUMN_GAP.findall(body)) >= 2):
        found.append("table row")
    if (paragraph_reports or RESULT_VERB.search(line)) and _measurements(line):
        found.append("reported measurement")
    prose = CODE_SPAN.sub(lambda m: "`" * len(m.group()), line)  # same offsets, no code
    for match in METRIC.finditer(prose):
        before = prose[max(0, match.start() - 20):match.start()]
        if not SPEC.search(before + match.group("between")):
            found.append("metric value")
            break
    return found


def paragraphs(source: str) -> list[list[tuple[int, str]]]:
    """Docstring paragraphs (split at blank lines) and blocks of consecutive ``#`` comments
    of ``source``, each a list of ``(line number, text)``."""
    blocks: list[list[tuple[int, str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                block: list[tuple[int, str]] = []
                for i, text in enumerate(body[0].value.value.splitlines()):
                    if text.strip():
                        block.append((body[0].lineno + i, text))
                    elif block:
                        blocks.append(block)
                        block = []
                blocks += [block] if block else []
    comments: list[tuple[int, str]] = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            if comments and token.start[0] != comments[-1][0] + 1:
                blocks.append(comments)
                comments = []
            comments.append((token.start[0], token.string))
    blocks += [comments] if comments else []
    return blocks


def _could_violate(source: str) -> bool:
    """Whether any rule can match anywhere in ``source`` (ignoring the exemptions): a cheap
    pass that spares parsing the files that hold no number with a unit, no metric value and
    no table row at all (a docstring's or comment's text is a part of the source)."""
    if NUMBER_UNIT.search(source) or METRIC.search(source):
        return True
    return any(len(DECIMAL.findall(line)) >= 2 and (
        PIPE_CELLS.search(line) or len(COLUMN_GAP.findall(line.strip())) >= 2)
        for line in source.splitlines())


def yaml_comment_blocks(source: str) -> list[list[tuple[int, str]]]:
    """Blocks of consecutive lines with a ``#`` comment in a YAML file (a ``#`` at the start of
    the line or after a space), each a list of ``(line number, comment)``."""
    blocks: list[list[tuple[int, str]]] = []
    for number, line in enumerate(source.splitlines(), start=1):
        if match := YAML_COMMENT.search(line):
            if blocks and blocks[-1][-1][0] == number - 1:
                blocks[-1].append((number, match.group(1)))
            else:
                blocks.append([(number, match.group(1))])
    return blocks


def scan(path: Path) -> list[str]:
    """``"path:line: rule: text"`` for every offending docstring or comment line of ``path``
    (a ``.py`` file, or a YAML config's comments)."""
    source = path.read_text(encoding="utf-8")
    if not _could_violate(source):
        return []
    try:
        rel = path.relative_to(REPO).as_posix()
    except ValueError:
        rel = str(path)
    problems = []
    blocks = yaml_comment_blocks(source) if path.suffix == ".yaml" else paragraphs(source)
    for block in blocks:
        reports = any(REPORT.search(text) for _, text in block)
        problems += [f"{rel}:{number}: {', '.join(rules)}: {text.strip()}"
                     for number, text in block if (rules := violations(text, reports))]
    return sorted(problems, key=lambda p: int(p.split(":")[1]))


def scanned_files() -> list[Path]:
    files = []
    for root in ROOTS:
        files += sorted((REPO / root).rglob("*.py")) if (REPO / root).is_dir() else []
    for root in YAML_ROOTS:
        files += sorted((REPO / root).rglob("*.yaml")) if (REPO / root).is_dir() else []
    return [f for f in files if f.relative_to(REPO).as_posix() not in ALLOWLIST]


def test_tree_has_no_measured_numbers_in_docstrings_or_comments():
    problems = [problem for path in scanned_files() for problem in scan(path)]
    assert not problems, ("measured numbers belong in results/<name>.json, not in docstrings or "
                          "comments:\n" + "\n".join(problems))


def test_allowlist_holds_only_scripts_that_still_need_it():
    """An allowlisted script that is gone or already clean must leave :data:`ALLOWLIST`."""
    stale = [name for name in sorted(ALLOWLIST)
             if not (REPO / name).is_file() or not scan(REPO / name)]
    assert not stale, f"remove from ALLOWLIST (converted or clean): {stale}"


PLANTED = '''"""Step time of the U-Net.

Measured 2026-12-02 on an idle 2-core machine: one step took 0.20 s.

    model     params M  s/step  val Dice
    unet          4.81    0.20     0.842
    | unet | 4.81 | 0.20 |

The best model reaches Dice 0.852 on 20 subjects.
"""


def f():
    # bf16 was 1.5x faster than float32
    return 1
'''


@pytest.mark.parametrize(("line", "rules"), [
    ("Measured on 2 cores: one step took 0.20 s.", ["reported measurement"]),
    ("    unet          4.81    0.20     0.842", ["table row"]),
    ("| unet | 4.81 | 0.20 |", ["table row"]),
    ("The best model reaches Dice 0.852 on 20 subjects.", ["metric value"]),
    ("# bf16 was 1.5x faster than float32", ["reported measurement"]),
    ("a U-Net step took 0.13 s instead of 0.20 s", ["reported measurement"]),
    ("lesion F1 0.68 -> 0.81", ["metric value"]),
])
def test_rule_flags_planted_lines(line, rules):
    assert violations(line) == rules


@pytest.mark.parametrize("line", [
    "Target: the best default config reaches Dice ≥ 0.85 within 10 minutes on 2 CPU cores.",
    "Goal: 2 processes ≥ 1.6× the patches/s of one.",
    "patch size (64, 64, 64), batch 2, overlap 0.5, lr 1e-3",
    "Args: spacing_mm: voxel size in mm (default 2.0); sigma: 0.5",
    "threshold on Dice 0.5 for a hit",
    "the first step pays for allocation and kernel selection",
    "(a few minutes; without --data it generates the cohort first)",
    "a 160×192×160 volume, resampled to 4 mm",
    "wait for the file lock instead of failing after SQLite's 5 s",
    "One leaderboard line, e.g. ``ΔR +0.05 [+0.02, +0.08]`` (paired bootstrap)",
])
def test_rule_passes_specs_and_shapes(line):
    assert violations(line) == []


def test_scan_reports_each_planted_line_with_file_and_line(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(PLANTED, encoding="utf-8")
    problems = scan(planted)
    assert [p.split(":")[1] for p in problems] == ["3", "6", "7", "9", "14"]
    assert all(p.startswith(str(planted)) for p in problems)
    assert "reported measurement" in problems[0] and "metric value" in problems[3]


def test_scan_reads_the_comments_of_yaml_configs(tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(
        "kind: study  # a comment without numbers\n"
        "overrides: [--trainer.max_epochs, '20']\n"
        "# it sharpened the peaks (CPM 0.97 -> 1.0)\n"
        "val_threshold: 0.5   # Dice ≥ 0.5 counts as a hit (a spec)\n"
        "metric: {dice: 0.83, f1: 0.71}\n", encoding="utf-8")
    problems = scan(config)
    assert [p.split(":")[1] for p in problems] == ["3"]
    assert "metric value" in problems[0]
