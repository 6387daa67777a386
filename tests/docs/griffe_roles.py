"""A griffe extension for the API reference (``mkdocs.yml``): Sphinx roles become Markdown.

asyncdal's docstrings are Google style, but name other objects with Sphinx roles
(``:class:`~asyncdal.errors.ReadOnlyError```, ``:func:`setup```, ``:mod:`asyncdal.testing```),
which Markdown would show verbatim. This extension rewrites each role before mkdocstrings
renders the docstring:

- into a cross-reference (``[`ReadOnlyError`][asyncdal.errors.ReadOnlyError]``) when it names
  an object that the API reference shows: a public module (no part of its path starts with an
  underscore, and it declares ``__all__``), a name that module exports, or a documented public
  member of an exported class. The name is looked up as written (a dotted path), else in the
  scope of the docstring's object (``:meth:`heal``` in ``FaultProxy``'s docstring), and an
  internal path is mapped to the public name that exports the same object;
- into plain code (```` `name` ````) otherwise: a private helper, a module whose path moved.
  Nothing links to a page that does not exist, so ``mkdocs build --strict`` stays clean without
  silencing autorefs' warnings.

Two more spellings griffe's Google parser would show badly: a reStructuredText literal-block
marker (a paragraph ending in ``::`` before an indented block) becomes a plain colon, the
indented block being a code block in Markdown already; and an ``Example:`` section becomes
``Examples:``, the title griffe parses (its ``>>>`` lines then render as code, not as one
paragraph).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")
_LITERAL_MARKER = re.compile(r"(\S)::\n(\n+ )")
_EXAMPLE_TITLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


def _is_public_module(module: griffe.Module) -> bool:
    return not any(part.startswith("_") for part in module.path.split(".")) and (
        module.exports is not None
    )


def _modules(module: griffe.Module) -> Iterator[griffe.Module]:
    yield module
    for member in module.modules.values():
        if not member.is_alias:
            yield from _modules(member)


def _documented(obj: griffe.Object | griffe.Alias) -> bool:
    try:
        return obj.docstring is not None
    except griffe.AliasResolutionError:
        return False


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles (and the two spellings above) in docstrings (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        public = self._public_paths(pkg)
        for module in _modules(pkg):
            for obj in self._objects(module):
                if obj.docstring is not None:
                    obj.docstring.value = self.rewrite(obj.docstring.value, obj, pkg, public)

    @staticmethod
    def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
        yield obj
        for member in obj.members.values():
            if not member.is_alias and not member.is_module:
                yield from SphinxRoles._objects(member)  # type: ignore[arg-type]

    @staticmethod
    def _public_paths(pkg: griffe.Module) -> dict[str, str]:
        """Every path an object is known by (canonical or public) -> the path the reference
        shows it under."""
        shown: dict[str, str] = {}
        for module in sorted(_modules(pkg), key=lambda m: m.path):
            if not _is_public_module(module):
                continue
            shown.setdefault(module.path, module.path)
            for name in module.exports or ():
                member = module.members.get(str(name))
                if member is None or not _documented(member):
                    continue
                path = f"{module.path}.{name}"
                target = member.final_target if member.is_alias else member
                shown.setdefault(path, path)
                shown.setdefault(target.path, path)
                if target.is_class:
                    for attribute, inner in target.members.items():
                        if attribute.startswith("_") or not _documented(inner):
                            continue
                        shown.setdefault(f"{path}.{attribute}", f"{path}.{attribute}")
                        shown.setdefault(f"{target.path}.{attribute}", f"{path}.{attribute}")
        return shown

    @staticmethod
    def _resolve(name: str, scope: griffe.Object, pkg: griffe.Module) -> str | None:
        """The full path ``name`` stands for in ``scope``, canonical where it can be."""
        if name == pkg.name or name.startswith(f"{pkg.name}."):
            path = name
        else:
            first, _, rest = name.partition(".")
            try:
                path = scope.resolve(first) + (f".{rest}" if rest else "")
            except griffe.NameResolutionError:
                return None
        relative = path.removeprefix(pkg.name).removeprefix(".")
        try:
            obj = pkg[relative] if relative else pkg
        except (KeyError, griffe.AliasResolutionError):
            return path
        try:
            return obj.final_target.path if obj.is_alias else obj.path
        except griffe.AliasResolutionError:
            return path

    def rewrite(
        self, text: str, obj: griffe.Object, pkg: griffe.Module, public: dict[str, str]
    ) -> str:
        """``text`` with its roles rewritten in the scope of ``obj``."""

        def replace(match: re.Match[str]) -> str:
            short, written = match.group(1) == "~", match.group(2)
            label = written.rsplit(".", 1)[-1] if short else written
            target = public.get(written)
            if target is None:
                resolved = self._resolve(written, obj, pkg)
                target = public.get(resolved) if resolved is not None else None
            if target is None:
                return f"`{label}`"
            return f"[`{label}`][{target}]"

        text = _EXAMPLE_TITLE.sub(r"\1Examples:", text)
        return _LITERAL_MARKER.sub(r"\1:\n\2", _ROLE.sub(replace, text))
