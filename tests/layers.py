"""The layer contract of ``cogimg`` (DESIGN.md, "Layers"): imports only point down.

Every module of the package is assigned a layer by its path; an import of a module in a higher
layer is an *upward edge*. Every form of import counts, wherever it stands (module level,
inside a function, under ``if TYPE_CHECKING``): ``import cogimg.x``, ``from cogimg.x import y``,
``from cogimg import x``, relative imports (``from ..x import y``) and
``importlib.import_module("cogimg.x")`` with a literal name.

    >>> edges = upward_imports(Path("cogimg"))
    >>> [(e.file, e.line, e.imported) for e in edges]      # [] when the contract holds
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

#: ``(dotted prefix, layer)``, lowest layer first. A module belongs to the layer of the longest
#: prefix that equals its dotted name or is a parent package of it; the bare package
#: ``cogimg`` (its ``__init__``) is base.
LAYERS: tuple[tuple[str, int], ...] = (
    ("cogimg", 1),
    ("cogimg.diseases", 1),
    ("cogimg.errors", 1),
    ("cogimg.io", 1),
    ("cogimg.schema", 1),
    ("cogimg.data", 1),
    ("cogimg.models", 2),
    ("cogimg.metrics", 2),
    ("cogimg.tasks", 3),
    ("cogimg.inference", 4),
    ("cogimg.paradigms", 5),
    ("cogimg.tracking", 6),
    ("cogimg.clinical", 6),
    ("cogimg.commands", 7),
    ("cogimg.cli", 7),
    ("cogimg.lightning_cli", 7),
    ("cogimg.__main__", 7),
)

LAYER_NAMES = {1: "base", 2: "models/metrics", 3: "tasks", 4: "inference", 5: "paradigms",
               6: "tracking/clinical", 7: "commands"}


@dataclass(frozen=True)
class Edge:
    """One import from ``file`` (path relative to the package's parent, ``/``-separated) at
    ``line`` of module ``imported`` (dotted), from layer ``source_layer`` to ``target_layer``."""

    file: str
    line: int
    importer: str
    imported: str
    source_layer: int
    target_layer: int

    def __str__(self) -> str:
        return (f"{self.file}:{self.line}: {self.importer} ({LAYER_NAMES[self.source_layer]}) "
                f"imports {self.imported} ({LAYER_NAMES[self.target_layer]})")


def layer_of(module: str, layers: tuple[tuple[str, int], ...] = LAYERS) -> int | None:
    """The layer of dotted ``module`` (``None`` outside every listed prefix)."""
    root = layers[0][0]
    # the package itself matches only exactly: its submodules need a prefix of their own
    matches = [(len(prefix), layer) for prefix, layer in layers
               if module == prefix or (prefix != root and module.startswith(prefix + "."))]
    return max(matches)[1] if matches else None


def module_name(path: Path, package_dir: Path) -> str:
    """Dotted name of the module at ``path`` inside ``package_dir`` (``pkg/a/__init__.py`` →
    ``pkg.a``)."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str, package_dir: Path) -> bool:
    """Whether ``dotted`` names a module or package that exists under ``package_dir``."""
    path = package_dir.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path, package_dir: Path) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import of the package ``package_dir`` in ``path``.

    ``from p import name`` counts as an import of ``p.name`` where that is a module, else of
    ``p``; relative imports are resolved against ``path``'s package."""
    root = package_dir.name
    importer = module_name(path, package_dir)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                if node.level - 1 >= len(parts):
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond {root}")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((node.lineno, sub if _is_module(sub, package_dir) else base))
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and (getattr(node.func, "attr", None) == "import_module"
                   or getattr(node.func, "id", None) == "import_module")):
            found.append((node.lineno, node.args[0].value))
    return sorted({(line, name) for line, name in found
                   if name == root or name.startswith(root + ".")})


def upward_imports(package_dir: Path, layers: tuple[tuple[str, int], ...] = LAYERS) -> list[Edge]:
    """Every import in ``package_dir/**/*.py`` of a module in a higher layer, by file and line.

    Raises ``ValueError`` naming a module (importer or imported) that no layer covers, so a new
    top-level module cannot escape the contract."""
    package_dir = Path(package_dir)
    edges = []
    for path in sorted(package_dir.rglob("*.py")):
        importer = module_name(path, package_dir)
        source = layer_of(importer, layers)
        rel = path.relative_to(package_dir.parent).as_posix()
        if source is None:
            raise ValueError(f"{rel}: module {importer} is in no layer; add it to LAYERS")
        for line, imported in imported_modules(path, package_dir):
            target = layer_of(imported, layers)
            if target is None:
                raise ValueError(f"{rel}:{line}: imports {imported}, which is in no layer")
            if target > source:
                edges.append(Edge(rel, line, importer, imported, source, target))
    return edges
