"""Render ``results/*.json`` into ``results/README.md`` and the results block of ``README.md``.

Every benchmark writes its numbers to ``results/<name>.json`` (``benchmarks/_common.py``,
:func:`write_result`); this script is the only way those numbers reach the documentation:

* ``results/README.md``: one section per result file — what the benchmark measures (its
  docstring's first line), the command, the machine, the date, the commit, and every number
  as a table (lists of rows become their own tables), except the raw measurements a file
  keeps under ``details`` (pointed to, not rendered);
* ``README.md``: the lines between ``<!-- results:begin -->`` and ``<!-- results:end -->``
  become a table with one row per result file holding a ``headline`` (its numbers, machine
  and date).

``--quick`` runs write ``results/<name>_quick.json``: smoke checks of a small configuration,
not committed (``.gitignore``) and therefore never rendered, so that what is rendered is the
same in every checkout.

    python benchmarks/render_results.py            # rewrite both files
    python benchmarks/render_results.py --check    # exit 1 if either differs from the files

Files written before :func:`write_result` recorded everything (no ``command``, ``git`` …)
render with what they hold. Standard library only, so the check runs anywhere.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
#: Keys of a result file that describe the run rather than hold its numbers.
META_KEYS = ("benchmark", "date", "command", "machine", "git", "versions", "headline")
#: Key of a result file holding raw measurements (per-subject scores, logs of each step) that
#: stay in the file: the section points to it instead of rendering it.
DETAILS_KEY = "details"
QUICK = "_quick"


class ResultsError(Exception):
    """A result file or README that cannot be rendered; the message names the file."""


def load_results(results_dir: Path) -> dict[str, dict]:
    """``{name: record}`` of every ``results_dir/*.json`` but the ``*_quick.json`` smoke runs,
    sorted by name."""
    results = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        if path.stem.endswith(QUICK):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ResultsError(f"{path}: not a readable JSON file ({error})") from error
        if not isinstance(record, dict):
            raise ResultsError(f"{path}: expected a JSON object, got {type(record).__name__}")
        headline = record.get("headline", {})
        if not isinstance(headline, dict):
            raise ResultsError(f"{path}: 'headline' must be an object of label: number")
        results[path.stem] = record
    return results


def fmt(value) -> str:
    """A table cell: 4 significant digits for floats, compact JSON for nested values."""
    if value is None:
        text = "–"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "),
                          default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return lines


def flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    """``(dotted key, scalar or list)`` pairs of nested dicts; lists of rows stay whole."""
    if isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            pairs += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    return [(prefix, value)]


def is_rows(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(r, dict) for r in value)


def benchmark_of(name: str, record: dict) -> str:
    return str(record.get("benchmark", name)).removesuffix(QUICK)


def what(name: str, record: dict, benchmarks_dir: Path) -> str:
    """The first line of the benchmark script's docstring, or the record's own description."""
    script = benchmarks_dir / f"{benchmark_of(name, record)}.py"
    if script.is_file():
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8")))
        if doc:
            return doc.splitlines()[0]
    for key in ("what", "description"):
        if isinstance(record.get(key), str):
            return record[key]
    return "(no benchmark script of this name; see the fields below)"


def machine_line(record: dict) -> str:
    machine = record.get("machine")
    if not isinstance(machine, dict):
        return "not recorded"
    device = machine.get("device") or ("cuda" if machine.get("cuda") else None)
    cpu = machine.get("cpu_model") or machine.get("processor") or "CPU model not recorded"
    threads = machine.get("threads", machine.get("torch_threads"))
    parts = [f"device {device}" if device else None,
             f"GPU {machine['cuda']}" if machine.get("cuda") else None,
             f"{cpu}, {machine.get('cpu_count', '?')} CPUs", f"{threads} torch threads"
             if threads is not None else None, machine.get("platform"),
             "load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min) at the end".format(
                 *machine["load_average"]) if machine.get("load_average") else None]
    return "; ".join(p for p in parts if p)


def commit_line(record: dict) -> str:
    git = record.get("git")
    if isinstance(git, dict) and git.get("commit"):
        return f"`{git['commit'][:12]}`" + (" (uncommitted changes)" if git.get("dirty") else "")
    for key in ("commit", "new_commit"):
        if record.get(key):
            return f"`{record[key]}`"
    return "not recorded"


def command_line(record: dict) -> str:
    command = record.get("command")
    if isinstance(command, list):
        return "`" + " ".join(str(c) for c in command) + "`"
    if isinstance(command, str):
        return f"`{command}`"
    return "not recorded"


def render_section(name: str, record: dict, benchmarks_dir: Path) -> list[str]:
    lines = [f"## {name}", "", f"- what: {what(name, record, benchmarks_dir)}",
             f"- command: {command_line(record)}", f"- machine: {machine_line(record)}",
             f"- date: {record.get('date', 'not recorded')}", f"- commit: {commit_line(record)}"]
    versions = record.get("versions")
    if isinstance(versions, dict):
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    if DETAILS_KEY in record:
        lines.append(f"- details: every measurement and per-subject score in "
                     f"`results/{name}.json` (key `{DETAILS_KEY}`), not rendered here")
    lines.append("")
    if record.get("headline"):
        lines += ["Headline:", ""] + table(["number", "value"],
                                            [[k, v] for k, v in record["headline"].items()]) + [""]
    scalars, row_tables = [], []
    numbers = {k: v for k, v in record.items() if k not in (*META_KEYS, DETAILS_KEY)}
    for key, value in flatten(numbers):
        (row_tables if is_rows(value) else scalars).append((key, value))
    if scalars:
        lines += table(["number", "value"], [[k, v] for k, v in scalars]) + [""]
    for key, rows in row_tables:
        columns = list(dict.fromkeys(column for row in rows for column in row))
        lines += [f"`{key}`:", ""] + table(columns, [[row.get(c) for c in columns]
                                                     for row in rows]) + [""]
    return lines


def render_results_readme(results: dict[str, dict], benchmarks_dir: Path) -> str:
    intro = ("Generated by `python benchmarks/render_results.py` from `results/*.json`; do not "
             "edit by hand. Each benchmark writes its file (`benchmarks/_common.py`, "
             "`write_result`); rerun the command of a section to regenerate its numbers, then "
             "rerun the renderer.")
    lines = ["# Results", "", intro, ""]
    if not results:
        lines += ["No result files yet.", ""]
    for name, record in results.items():
        lines += render_section(name, record, benchmarks_dir)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_block(results: dict[str, dict]) -> str:
    """The README lines between the markers (markers excluded): one row per result file with
    a headline, its numbers as ``label = value`` separated by ``;``."""
    rows = []
    for name, record in results.items():
        if not record.get("headline"):
            continue
        machine = record.get("machine", {})
        where = machine.get("cuda") or machine.get("cpu_model") or machine.get("processor")
        where = f"{where or 'CPU'}, {machine.get('threads', machine.get('torch_threads', '?'))} thr."
        numbers = "; ".join(f"{label} = {fmt(value)}" for label, value in record["headline"].items())
        rows.append([f"[{name}](results/README.md#{name})", numbers, where,
                     str(record.get("date", "?"))[:10]])
    intro = ("Headline numbers, generated from `results/*.json` by "
             "`python benchmarks/render_results.py` (every number, with its command, machine "
             "and commit, in [results/README.md](results/README.md)); compare numbers only "
             "between runs on the same machine:")
    lines = ["", intro, ""]
    if rows:
        lines += table(["result", "headline numbers", "machine", "date"], rows)
    else:
        lines.append("No result file has headline numbers yet.")
    return "\n".join(lines) + "\n\n"


def splice(readme_text: str, block: str, readme: Path) -> str:
    """``readme_text`` with the text between the markers replaced by ``block``."""
    if readme_text.count(BEGIN) != 1 or readme_text.count(END) != 1:
        raise ResultsError(f"{readme}: needs exactly one {BEGIN} and one {END} line")
    head, rest = readme_text.split(BEGIN)
    _, tail = rest.split(END)
    if not head.endswith("\n"):
        raise ResultsError(f"{readme}: {BEGIN} must start a line")
    return head + BEGIN + "\n" + block.lstrip("\n") + END + tail


def write_text(path: Path, text: str) -> None:
    """Atomic write (same as ``cogimg.io.atomic_write_text``, without importing cogimg)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8", newline="")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a rendered file differs from the results")
    parser.add_argument("--results", type=Path, default=REPO / "results")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--benchmarks", type=Path, default=REPO / "benchmarks")
    args = parser.parse_args(argv)
    try:
        results = load_results(args.results)
        readme_text = args.readme.read_text(encoding="utf-8")
        wanted = {args.results / "README.md": render_results_readme(results, args.benchmarks),
                  args.readme: splice(readme_text, render_block(results), args.readme)}
    except (ResultsError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    stale = []
    for path, text in wanted.items():
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if current == text:
            continue
        stale.append(path)
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(
                current.splitlines(True), text.splitlines(True), str(path), f"{path} (rendered)"))
        else:
            write_text(path, text)
            print(f"wrote {path}")
    if args.check and stale:
        print(f"out of date: {', '.join(map(str, stale))}; run python benchmarks/render_results.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
