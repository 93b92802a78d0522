"""The layer contract: no module of ``cogimg`` imports a module of a higher layer.

Layers, lowest first (the project's DESIGN.md): base (``__init__``, diseases, io, data) ·
models, metrics · tasks · inference · paradigms · tracking, clinical · commands (commands/,
cli, lightning_cli, __main__). The checker is :mod:`tests.layers`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.layers import imported_modules, layer_of, upward_imports

PACKAGE = Path(__file__).resolve().parents[1] / "cogimg"

def test_no_module_imports_a_higher_layer():
    edges = upward_imports(PACKAGE)
    assert not edges, "upward imports:\n" + "\n".join(map(str, edges))


def test_checker_sees_the_imports_of_the_real_tree():
    """Guards the two tests above against passing vacuously (e.g. on a renamed package)."""
    seen = {name for _, name in imported_modules(PACKAGE / "tasks" / "segmentation.py", PACKAGE)}
    assert {"cogimg.models.sliding_window", "cogimg.tasks.base"} <= seen


def test_layer_of_uses_the_longest_prefix():
    assert layer_of("cogimg") == 1 and layer_of("cogimg.data.bids") == 1
    assert layer_of("cogimg.models.sliding_window") == 2
    assert layer_of("cogimg.inference.checkpoint") == 4
    assert layer_of("cogimg.lightning_cli") == 7 and layer_of("cogimg.tracking.experiment_cli") == 6
    assert layer_of("cogimg.unknown") is None  # only the package itself is base, not its children


def write(root: Path, rel: str, text: str = "") -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def fake_package(tmp_path) -> Path:
    """A tiny ``cogimg`` tree: downward imports everywhere, and four upward ones."""
    for rel in ("cogimg/__init__.py", "cogimg/io.py", "cogimg/data/__init__.py",
                "cogimg/models/__init__.py", "cogimg/tasks/__init__.py",
                "cogimg/paradigms/__init__.py", "cogimg/paradigms/fed.py"):
        write(tmp_path, rel)
    write(tmp_path, "cogimg/data/loader.py",
          "import os\n"
          "from cogimg import io\n"
          "from cogimg.io import atomic_write_text\n"
          "\n"
          "def run():\n"
          "    from cogimg.paradigms.fed import fit  # line 6: inside a function, upward\n")
    write(tmp_path, "cogimg/tasks/seg.py",
          "from cogimg import models\n"
          "from ..paradigms import fed\n"  # line 2: relative, upward
          "from .. import data\n")
    write(tmp_path, "cogimg/models/net.py",
          "import importlib\n"
          "from cogimg import tasks\n"  # line 2: `from cogimg import x`, upward
          "importlib.import_module('cogimg.paradigms.fed')\n")  # line 3: literal import_module
    return tmp_path / "cogimg"


def test_checker_reports_each_upward_import_with_file_and_line(fake_package):
    found = sorted((e.file, e.line, e.imported) for e in upward_imports(fake_package))
    assert found == [
        ("cogimg/data/loader.py", 6, "cogimg.paradigms.fed"),
        ("cogimg/models/net.py", 2, "cogimg.tasks"),
        ("cogimg/models/net.py", 3, "cogimg.paradigms.fed"),
        ("cogimg/tasks/seg.py", 2, "cogimg.paradigms.fed"),
    ]
    edge = next(e for e in upward_imports(fake_package) if e.file == "cogimg/data/loader.py")
    assert str(edge) == ("cogimg/data/loader.py:6: cogimg.data.loader (base) imports "
                         "cogimg.paradigms.fed (paradigms)")


def test_checker_passes_a_tree_without_upward_imports(fake_package):
    for rel in ("data/loader.py", "tasks/seg.py", "models/net.py"):
        (fake_package / rel).write_text("from cogimg.io import atomic_write_text\n", encoding="utf-8")
    assert upward_imports(fake_package) == []


def test_a_module_outside_every_layer_is_an_error(fake_package):
    write(fake_package.parent, "cogimg/newthing.py", "from cogimg import io\n")
    with pytest.raises(ValueError, match=r"cogimg/newthing.py: module cogimg.newthing is in no layer"):
        upward_imports(fake_package)
