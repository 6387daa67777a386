"""The fakes' own promises: they are the user's repository type, run the user's methods or say
why not, and refuse what the real unit of work refuses."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdal import Repository, UnitOfWorkError
from asyncdal.testing import FakeUnitOfWork, InMemoryRepository
from tests.blog import Author, AuthorRepository


async def test_the_fake_is_the_users_repository_class() -> None:
    authors = InMemoryRepository.like(AuthorRepository)
    assert isinstance(authors, AuthorRepository)
    assert isinstance(authors, InMemoryRepository)
    assert type(authors).__name__ == "InMemoryAuthorRepository"
    assert authors.model is Author
    assert authors.sortable == AuthorRepository.sortable
    # Each fake has rows of its own.
    await authors.add(Author(email="a@x", name="A"))
    assert await InMemoryRepository.like(AuthorRepository).count() == 0


async def test_a_method_using_the_session_fails_naming_itself() -> None:
    authors = InMemoryRepository.like(AuthorRepository)
    named = r"AuthorRepository\.raw_count uses self\.session"
    with pytest.raises(NotImplementedError, match=named):
        await authors.raw_count()


async def test_overrides_calling_super_run_on_the_fake() -> None:
    class TidyAuthors(AuthorRepository):
        async def add(self, obj: Author) -> Author:
            obj.name = obj.name.strip()
            return await super().add(obj)

    authors = InMemoryRepository.like(TidyAuthors)
    added = await authors.add(Author(email="a@x", name="  Ada  "))
    assert added.name == "Ada"
    assert await authors.by_email("a@x") is added


def test_like_needs_a_repository_with_a_model() -> None:
    with pytest.raises(TypeError, match="no model"):
        InMemoryRepository.like(Repository)


async def test_a_server_default_the_fake_cannot_compute_is_named() -> None:
    class Base(DeclarativeBase):
        pass

    class Thing(Base):
        __tablename__ = "things"
        id: Mapped[int] = mapped_column(primary_key=True)
        code: Mapped[str] = mapped_column(String(8), server_default=func.md5("x"))
        kind: Mapped[str] = mapped_column(String(8), server_default="plain")

    class Things(Repository[Thing]):
        pass

    things = InMemoryRepository.like(Things)
    with pytest.raises(NotImplementedError, match=r"things\.code's default \(md5"):
        await things.add(Thing())
    added = await things.add(Thing(code="c"))
    # As with a sequence, the failed insert used up an id.
    assert (added.id, added.kind) == (2, "plain")


async def test_the_fake_unit_of_work_is_entered_once_and_commits_inside() -> None:
    uow = FakeUnitOfWork()
    with pytest.raises(UnitOfWorkError, match="not open"):
        await uow.commit()
    async with uow:
        await uow.commit()
    with pytest.raises(UnitOfWorkError, match="entered only once"):
        async with uow:
            pass
    assert uow.commits == 1


SNIPPET = textwrap.dedent(
    """
    from typing import assert_type

    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    from asyncdal import Repository
    from asyncdal.testing import InMemoryRepository


    class Base(DeclarativeBase):
        pass


    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str]


    class UserRepository(Repository[User]):
        filterable = frozenset({"email"})

        async def by_email(self, email: str) -> User | None:
            found = await self.list(filters={"email": email}, limit=1)
            return found[0] if found else None


    def needs_users(users: UserRepository) -> None: ...


    users = InMemoryRepository.like(UserRepository)
    assert_type(users, UserRepository)
    needs_users(users)
    wrong: int = users  # the one error expected
    """
)


def test_like_is_typed_as_the_users_repository(tmp_path: Path) -> None:
    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(snippet)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout
    assert '"UserRepository", variable has type "int"' in errors[0]


async def test_outbox_events_not_committed_are_gone() -> None:
    from asyncdal.outbox import Outbox

    uow = FakeUnitOfWork()
    async with uow:
        await Outbox.of(uow).add("kept", {})
        await uow.commit()
        await Outbox.of(uow).add("dropped", {})
    assert [event for event, _, _ in uow.fake_outbox.events] == ["kept"]
