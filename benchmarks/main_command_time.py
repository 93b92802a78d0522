"""Wall time of the README's main command on a fresh clone, install included.

Clones this repository's ``HEAD`` into a temporary folder, reads the main command from
``README.md`` there (the line after ``<!-- main-command -->``, as ``.ci/run`` reads the test
command), runs its ``&&``-joined steps one after the other with bash in the clone and times
each, checks that the run wrote its leaderboard, figures and report, and writes
``results/main_command_time.json``: seconds per step and in total, and the size of pip's
cache before the run (downloads it already holds are not timed again: a cold cache adds the
download time of the wheels). The README quotes the total from this file.

    python benchmarks/main_command_time.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- main-command -->"


def main_command(readme: Path) -> str:
    """The one-line ``bash`` block after the marker in ``readme``."""
    block = re.search(rf"{MARKER}\n```bash\n(.+)\n```", readme.read_text(encoding="utf-8"))
    if block is None:
        raise SystemExit(f"{readme}: no command after {MARKER}")
    return block.group(1).strip()


def out_folder(command: str) -> str:
    """The ``--out`` folder of the command's last step."""
    words = shlex.split(command.split(" && ")[-1])
    if "--out" not in words or words.index("--out") + 1 == len(words):
        raise SystemExit(f"the main command has no --out folder: {command}")
    return words[words.index("--out") + 1]


def demo_outputs(out: Path) -> list[str]:
    """What the main job must have written under ``out``; raises naming what is missing."""
    wanted = [out / "leaderboard.md", out / "report.html", out / "figures"]
    missing = [str(p) for p in wanted if not p.exists()]
    if missing or not any((out / "figures").iterdir()):
        raise SystemExit(f"the main command did not write {missing or [str(out / 'figures') + '/*']}")
    return [str(p.relative_to(out)) for p in wanted]


def pip_cache_mb() -> float | None:
    found = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True,
                           check=False)
    folder = Path(found.stdout.strip())
    if found.returncode or not folder.is_dir():
        return None
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into this new folder and keep it")
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists():
        raise SystemExit(f"{args.keep} exists; --keep needs a new folder")
    clone = args.keep or Path(tempfile.mkdtemp(prefix="cogimg-main-command-")) / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    command = main_command(clone / "README.md")
    cache_mb = pip_cache_mb()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    steps = []
    try:
        for step in command.split(" && "):
            start = time.perf_counter()
            subprocess.run(["bash", "-c", step], cwd=clone, env=env, check=True)
            steps.append({"step": step, "seconds": round(time.perf_counter() - start, 1)})
            print(f"{steps[-1]['seconds']:8.1f} s  {step}", flush=True)
        outputs = demo_outputs(clone / out_folder(command))
    finally:
        if args.keep is None:
            shutil.rmtree(clone.parent, ignore_errors=True)
    write_result("main_command_time", {"main_command": command, "steps": steps, "outputs": outputs,
                                       "pip_cache_mb_before": cache_mb},
                 headline={"main command, fresh clone, min": round(
                               sum(s["seconds"] for s in steps) / 60.0, 1),
                           "of which install, min": round(sum(
                               s["seconds"] for s in steps if "pip install" in s["step"]) / 60.0, 1)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
