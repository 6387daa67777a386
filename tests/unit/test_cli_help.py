"""``asyncdal --help`` and every command's help read as plain text: no reStructuredText."""

from __future__ import annotations

import re

import pytest

from asyncdal.ops._cli import main, plain

_MARKUP = re.compile(r"``|:(?:mod|class|func|meth|attr|data|exc|obj):`")


def _help(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def _commands(text: str) -> list[str]:
    """The subcommands a help text lists (its usage's ``{a,b,c}``), if any."""
    found = re.search(r"\{([a-z,_-]+)\}", text)
    return found.group(1).split(",") if found else []


def test_the_help_names_each_command_and_its_exit_codes_in_plain_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _help(capsys)
    # The docstring's "The ``asyncdal`` command." was printed with its backticks.
    assert text.splitlines()[2] == "The asyncdal command."
    assert "asyncdal check [paths]: the architecture check; exit code 1" in text
    assert "GET /health/ready" in text
    assert not _MARKUP.search(text), text
    assert "(see" not in text  # references a terminal cannot follow are left out


def test_no_help_of_any_command_shows_markup(capsys: pytest.CaptureFixture[str]) -> None:
    pending: list[tuple[str, ...]] = [()]
    seen = 0
    while pending:
        command = pending.pop()
        text = _help(capsys, *command)
        seen += 1
        assert not _MARKUP.search(text), (command, text)
        pending += [(*command, name) for name in _commands(text)]
    assert seen >= 8  # the top, check, health, budget, migrations (init), outbox (and its own)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("The ``asyncdal`` command.", "The asyncdal command."),
        ("see :class:`~asyncdal.errors.ReadOnlyError`", "see ReadOnlyError"),
        ("see :func:`asyncdal.setup`", "see asyncdal.setup"),
        ("the check (see :mod:`asyncdal.check`); exit", "the check; exit"),
        ("operations (see\n:mod:`asyncdal.outbox._cli`).", "operations."),
        ("no markup", "no markup"),
    ],
)
def test_plain_drops_restructuredtext(text: str, shown: str) -> None:
    assert plain(text) == shown
