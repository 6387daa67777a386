"""A griffe extension for the API reference (``mkdocs.yml``): a private base class is not shown.

``CommitOutcomeUnknownError`` derives from ``_OfDatabaseError``, a private helper that keeps
the ``database`` attribute; the reference showed "Bases: _OfDatabaseError", a name a reader can
neither import nor find on the site. This extension shows, in place of each private base (its
name starts with an underscore), that base's own bases, repeated until they are public: the
reference then reads "Bases: AsyncdalError". Only what is shown changes: the classes, and so
what an ``except`` clause catches, stay as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import griffe

__all__ = ["PublicBases", "public_bases"]


def _classes(obj: griffe.Object) -> Iterator[griffe.Class]:
    for member in obj.members.values():
        if member.is_alias:
            continue
        if isinstance(member, griffe.Class):
            yield member
        if isinstance(member, griffe.Module | griffe.Class):
            yield from _classes(member)


def _is_private(base: str | griffe.Expr) -> bool:
    return str(base).rsplit(".", 1)[-1].startswith("_")


def _key(base: str | griffe.Expr) -> str:
    return str(getattr(base, "canonical_path", base))


def public_bases(cls: griffe.Class) -> list[str | griffe.Expr]:
    """``cls``'s bases as the reference shows them: each private one replaced by its own
    (public) bases, each base once, in order."""
    shown: list[str | griffe.Expr] = []
    seen: set[str] = set()
    for base in cls.bases:
        if _is_private(base):
            try:
                found = cls.modules_collection[_key(base)]
            except (KeyError, griffe.AliasResolutionError):
                found = None
            if isinstance(found, griffe.Alias):
                found = found.final_target
            # Not found: shown as written rather than lost.
            replaced = public_bases(found) if isinstance(found, griffe.Class) else [base]
        else:
            replaced = [base]
        for expression in replaced:
            key = _key(expression)
            if key not in seen:
                seen.add(key)
                shown.append(expression)
    return shown


class PublicBases(griffe.Extension):
    """Show a class's nearest public ancestors in place of a private base (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        # Every class's shown bases from the classes as loaded, then all set at once: a
        # class rewritten first would otherwise lend its rewritten bases to a subclass.
        shown = {cls.path: (cls, public_bases(cls)) for cls in _classes(pkg)}
        for cls, bases in shown.values():
            cls.bases = bases
