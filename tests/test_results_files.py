"""Result files (``results/<name>.json``) and what is rendered from them.

``benchmarks/_common.py`` writes the files, ``benchmarks/render_results.py`` renders them
into ``results/README.md`` and the results block of ``README.md``; ``--check`` keeps both in
step with the files, so a README number cannot drift from the file it comes from.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load("render_results")

README = """# demo

Some text.

<!-- results:begin -->
stale text
<!-- results:end -->

More text.
"""


def test_rendered_files_match_the_result_files_of_the_tree():
    """README.md's results block and results/README.md are what results/*.json give."""
    assert render.main(["--check"]) == 0


def test_write_result_records_machine_commit_versions_and_command(tmp_path, monkeypatch):
    import torch

    common = _load("_common")
    monkeypatch.setattr(sys, "argv", ["benchmarks/demo.py", "--quick", "--threads", "1"])
    path = common.write_result("demo", {"rows": [{"model": "unet", "step_s": 0.25}]},
                               results_dir=tmp_path, device="cpu", headline={"step, s": 0.25})
    assert path == tmp_path / "demo.json"
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]  # no temporary file left
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["benchmark"] == "demo"
    assert record["command"][1:] == ["benchmarks/demo.py", "--quick", "--threads", "1"]
    date = datetime.fromisoformat(record["date"])
    assert date.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - date) < timedelta(minutes=5)
    machine = record["machine"]
    assert machine["device"] == "cpu" and machine["threads"] == torch.get_num_threads()
    assert machine["cpu_count"] >= 1
    assert machine["load_average"] == pytest.approx(list(os.getloadavg()), abs=5.0)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text(errors="replace"):
        text = cpuinfo.read_text(errors="replace")
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
        assert machine["cpu_model"] == model.group(1).strip()
    assert re.fullmatch(r"[0-9a-f]{40}", record["git"]["commit"])
    assert isinstance(record["git"]["dirty"], bool)
    versions = record["versions"]
    assert versions["torch"] == torch.__version__
    assert {"monai", "torchio", "lightning", "numpy", "nilearn", "timm"} <= set(versions)
    assert record["headline"] == {"step, s": 0.25}
    assert record["rows"] == [{"model": "unet", "step_s": 0.25}]


def _write(folder: Path, name: str, record: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(record), encoding="utf-8")


def test_render_writes_sections_and_headline_block_and_check_detects_drift(tmp_path):
    results, bench = tmp_path / "results", tmp_path / "benchmarks"
    results.mkdir()
    bench.mkdir()
    (bench / "demo.py").write_text('"""Demo step time, side by side."""\n', encoding="utf-8")
    full = {"benchmark": "demo", "date": "2026-12-06T10:00:00+00:00",
            "command": ["python", "benchmarks/demo.py"],
            "machine": {"device": "cpu", "cpu_model": "Test CPU", "cpu_count": 2, "threads": 1,
                        "load_average": [1.52, 1.2, 0.9]},
            "git": {"commit": "a" * 40, "dirty": True}, "versions": {"torch": "9.9"},
            "headline": {"step, s": 0.123456, "ratio": 2}, "settings": {"size": 64},
            "rows": [{"model": "unet", "step_s": 0.25}, {"model": "dynunet", "step_s": 1.5}],
            "details": [{"case": "sub-01", "step_s": 0.777}]}
    _write(results, "demo", full)
    _write(results, "demo_quick", {**full, "benchmark": "demo_quick", "headline": {"step, s": 9.0}})
    _write(results, "legacy", {"benchmark": "legacy", "machine": {"processor": "", "cpu_count": 2,
                                                                   "torch_threads": 2},
                               "ddp": {"ratio_2_vs_1": 1.349041349041349}})
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    args = ["--results", str(results), "--readme", str(readme), "--benchmarks", str(bench)]

    assert render.main([*args, "--check"]) == 1  # the block is stale
    assert render.main(args) == 0
    assert render.main([*args, "--check"]) == 0

    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# demo\n\nSome text.\n\n<!-- results:begin -->\n")
    assert text.endswith("<!-- results:end -->\n\nMore text.\n") and "stale text" not in text
    block = text.split("<!-- results:begin -->")[1].split("<!-- results:end -->")[0]
    assert ("| [demo](results/README.md#demo) | step, s = 0.1235; ratio = 2 | Test CPU, 1 thr. "
            "| 2026-12-06 |") in block
    assert "demo_quick" not in block and "= 9" not in block  # smoke runs are not rendered
    assert "legacy" not in block  # no headline, not in the README

    page = (results / "README.md").read_text(encoding="utf-8")
    assert "demo_quick" not in page
    demo = page.split("## demo\n")[1].split("## legacy")[0]
    assert "- what: Demo step time, side by side." in demo
    assert "- command: `python benchmarks/demo.py`" in demo
    assert f"- commit: `{'a' * 12}` (uncommitted changes)" in demo
    assert "Test CPU, 2 CPUs; 1 torch threads" in demo
    assert "load average 1.5 / 1.2 / 0.9 (1 / 5 / 15 min) at the end" in demo
    assert "| settings.size | 64 |" in demo
    assert "| model | step_s |" in demo and "| dynunet | 1.5 |" in demo
    # raw measurements stay in the file: pointed to, not rendered
    assert "- details: every measurement and per-subject score in `results/demo.json`" in demo
    assert "sub-01" not in demo and "0.777" not in demo
    legacy = page.split("## legacy\n")[1]
    assert "| ddp.ratio_2_vs_1 | 1.349 |" in legacy and "- command: not recorded" in legacy

    readme.write_text(text.replace("0.1235", "0.1"), encoding="utf-8")  # a hand-edited number
    assert render.main([*args, "--check"]) == 1
    assert render.main(args) == 0  # restored from the file
    full["headline"]["step, s"] = 0.2  # a new run of the benchmark
    _write(results, "demo", full)
    assert render.main([*args, "--check"]) == 1
    assert render.main(args) == 0
    assert "step, s = 0.2; ratio = 2" in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize(("content", "readme_text", "message"), [
    ("{not json", README, "bad.json: not a readable JSON file"),
    ("[1, 2]", README, "bad.json: expected a JSON object"),
    ('{"headline": [1]}', README, "bad.json: 'headline' must be an object"),
    ("{}", "# no markers\n", "README.md: needs exactly one <!-- results:begin -->"),
])
def test_bad_result_file_or_readme_is_one_error_naming_the_file(tmp_path, capsys, content,
                                                                 readme_text, message):
    (tmp_path / "bad.json").write_text(content, encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(readme_text, encoding="utf-8")
    code = render.main(["--results", str(tmp_path), "--readme", str(readme), "--check"])
    assert code == 1
    assert message in capsys.readouterr().err
