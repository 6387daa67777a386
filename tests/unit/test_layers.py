"""The package is layered, and imports point one way: a module may import its own layer and
those below it, never one above. Read from the source (every import, those inside functions and
under ``TYPE_CHECKING`` included), so a new module or import is checked without a list to update.
"""

from __future__ import annotations

import ast
from pathlib import Path

import asyncdal

SOURCE = Path(asyncdal.__file__).parent

# Bottom to top. A module belongs to the first layer one of whose prefixes starts its name.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "configuration and errors",
        (
            "asyncdal.errors",
            "asyncdal._translate",
            "asyncdal._sql",
            "asyncdal._request_id",
            "asyncdal.settings",
        ),
    ),
    ("engine", ("asyncdal.engine",)),
    ("replicas", ("asyncdal.replicas",)),
    ("orm", ("asyncdal.orm",)),
    ("observability", ("asyncdal.observe", "asyncdal.metrics")),
    ("the public package", ("asyncdal",)),
    ("integrations", ("asyncdal.fastapi", "asyncdal.container")),
    ("operations and outbox", ("asyncdal.ops", "asyncdal.outbox", "asyncdal.__main__")),
    ("testing", ("asyncdal.testing",)),
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (prefix length, layer index): the longest prefix wins
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS"
    return best[1]


def imports_of(path: Path) -> set[str]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            # `from asyncdal.outbox import _sql` imports a module, not a name
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name[0] == "_")
    return {name for name in found if name == "asyncdal" or name.startswith("asyncdal.")}


def _edges() -> list[tuple[str, str]]:
    return [
        (_module_name(path), imported)
        for path in sorted(SOURCE.rglob("*.py"))
        for imported in sorted(imports_of(path))
    ]


def test_the_import_graph_is_read() -> None:
    # Guards the reading itself: with no edges found, the next test would pass vacuously.
    edges = _edges()
    assert ("asyncdal.orm._loop_engines", "asyncdal.engine._create") in edges
    assert len(edges) > 100


def test_no_layer_imports_a_higher_one() -> None:
    wrong = [
        f"{importer} ({LAYERS[layer_of(importer)][0]}) imports {imported} "
        f"({LAYERS[layer_of(imported)][0]})"
        for importer, imported in _edges()
        if layer_of(imported) > layer_of(importer)
    ]
    assert wrong == []


def test_only_the_public_package_and_above_import_it() -> None:
    # Internal modules import from their layers: `from asyncdal import X` inside the package
    # would load every layer (and their optional dependencies) from below.
    public = layer_of("asyncdal")
    wrong = [
        importer
        for importer, imported in _edges()
        if imported == "asyncdal" and layer_of(importer) < public
    ]
    assert wrong == []


def test_a_layer_is_given_as_the_layers_see_it() -> None:
    assert layer_of("asyncdal.engine._guard") < layer_of("asyncdal.orm._database")
    assert layer_of("asyncdal.outbox._worker") > layer_of("asyncdal.fastapi")
    assert layer_of("asyncdal.settings._model") == 0
