"""The public API, computed from the package itself: no copied list of names.

Public modules are those whose dotted path has no part starting with an underscore. Each one
that declares ``__all__`` exports only names that import and are documented, and nothing else
public; a layer package (``asyncdal.engine``, ``asyncdal.orm``, ...) declares nothing and
exports nothing: its modules are underscore modules, reached through the public ones.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import inspect
import itertools
import pkgutil
import types
from importlib.resources import files
from pathlib import Path

import pytest

import asyncdal

SOURCE = Path(asyncdal.__file__).parent


def _public_modules() -> list[str]:
    names = ["asyncdal"]
    for info in pkgutil.walk_packages(asyncdal.__path__, "asyncdal."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


PUBLIC_MODULES = _public_modules()


def _documented_constants(module: types.ModuleType) -> set[str]:
    """Names assigned at module level with a string literal right below (attribute docs)."""
    tree = ast.parse(inspect.getsource(module))
    documented = set()
    body = tree.body
    for node, following in itertools.pairwise(body):
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign):
            target = node.target
        if (
            isinstance(target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            documented.add(target.id)
    return documented


def _defining_module(module: types.ModuleType, name: str) -> types.ModuleType:
    """The module whose source documents ``name`` (where it is assigned)."""
    for candidate in [module, *(m for m in _all_asyncdal_modules() if m is not module)]:
        if name in _documented_constants(candidate):
            return candidate
    return module


def _all_asyncdal_modules() -> list[types.ModuleType]:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(asyncdal.__path__, "asyncdal.")
        if info.name != "asyncdal.__main__"
    ]


def test_the_public_modules_are_found() -> None:
    # Guards the computation itself: an empty or partial walk would make every test pass.
    for expected in ("asyncdal", "asyncdal.fastapi", "asyncdal.testing", "asyncdal.outbox"):
        assert expected in PUBLIC_MODULES


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_imports_and_is_documented(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__, f"{module_name} has no docstring"
    for name in getattr(module, "__all__", []):
        value = getattr(module, name)  # raises when it does not import
        if inspect.isclass(value) or inspect.isfunction(value) or hasattr(value, "__wrapped__"):
            function = getattr(value, "__wrapped__", value)  # a pytest fixture's function
            assert inspect.getdoc(function), f"{module_name}.{name} has no docstring"
        elif not isinstance(value, types.ModuleType):
            owner = _defining_module(module, name)
            assert name in _documented_constants(owner) or (
                owner.__doc__ and name in (owner.__doc__)
            ), f"{module_name}.{name} is not documented"


def _public_attributes(module: types.ModuleType) -> set[str]:
    future = {feature for feature in __future__.all_feature_names}
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name not in future
        and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_nothing_is_exported_by_accident(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(getattr(module, "__all__", []))
    lazy = set(getattr(module, "_LAZY", {}))  # names a package loads on first use
    assert _public_attributes(module) - exported == set(), (
        f"{module_name} has public names outside __all__: define them in an underscore "
        "module and export them on purpose, or prefix them with an underscore"
    )
    assert exported - _public_attributes(module) - lazy == set()


def test_package_is_typed() -> None:
    assert files(asyncdal).joinpath("py.typed").is_file()
