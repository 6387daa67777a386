"""asyncdal.testing serves any test runner: importing it and using its fakes loads no pytest.

Checked in a fresh interpreter: this one has pytest loaded already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Uses the fakes as a unit test of another runner would, then reports what got imported.
SCRIPT = textwrap.dedent(
    """
    import asyncio
    import sys

    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    import asyncdal.testing
    from asyncdal import Repository
    from asyncdal.testing import FakeUnitOfWork, InMemoryRepository


    class Base(DeclarativeBase):
        pass


    class Item(Base):
        __tablename__ = "items"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]


    class ItemRepository(Repository[Item]):
        filterable = frozenset({"name"})


    async def main() -> None:
        items = InMemoryRepository.like(ItemRepository)
        uow = FakeUnitOfWork({ItemRepository: items})
        async with uow:
            await uow.repository(ItemRepository).add(Item(name="kettle"))
            await uow.commit()
        assert uow.committed
        assert await items.count(filters={"name": "kettle"}) == 1


    asyncio.run(main())
    print(sorted(name for name in sys.modules if name.split(".")[0] in {"pytest", "_pytest"}))
    """
)


def test_importing_asyncdal_testing_and_using_its_fakes_loads_no_pytest() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_check_would_see_pytest_if_it_were_imported() -> None:
    # Guards the check itself: a script that never reports pytest would pass vacuously.
    script = SCRIPT.replace("import asyncdal.testing\n", "import asyncdal.testing.plugin\n")
    assert script != SCRIPT
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "'pytest'" in result.stdout
    assert "'_pytest" in result.stdout
