"""`leadwerk --help` explains itself: every command, option and argument says what it is for,
`-h` works wherever `--help` does, and `leadwerk --version` names the version."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from worker.commands.cli import app

runner = CliRunner()


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every command and command group, the top one first."""
    yield path
    for name, command in sorted(getattr(group, "commands", {}).items()):
        yield from commands(command, (*path, name))


def command_at(path: tuple[str, ...]) -> Any:
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    return command


EVERY_COMMAND = list(commands(typer.main.get_command(app)))


def test_the_walk_reaches_the_commands_an_operator_uses() -> None:
    names = {" ".join(path) for path in EVERY_COMMAND}
    assert {"migrate", "run", "worker", "clock", "web", "status", "rules check"} <= names


@pytest.mark.parametrize("path", EVERY_COMMAND, ids=lambda path: " ".join(path) or "leadwerk")
def test_every_command_option_and_argument_has_a_help_text(path: tuple[str, ...]) -> None:
    command = command_at(path)
    assert command.help, f"leadwerk {' '.join(path)} has no help text"
    undescribed = [
        param.name
        for param in command.params
        if not getattr(param, "help", None) and param.name != "help"
    ]
    assert undescribed == [], f"leadwerk {' '.join(path)}: no help for {undescribed}"


@pytest.mark.parametrize("path", EVERY_COMMAND, ids=lambda path: " ".join(path) or "leadwerk")
def test_dash_h_shows_the_same_help_as_dash_dash_help(path: tuple[str, ...]) -> None:
    short = runner.invoke(app, [*path, "-h"], prog_name="leadwerk")
    long = runner.invoke(app, [*path, "--help"], prog_name="leadwerk")
    assert short.exit_code == 0, short.output
    assert "Usage:" in short.output
    assert short.output == long.output


def test_options_with_a_default_show_it_in_the_help() -> None:
    result = runner.invoke(app, ["run", "--help"], terminal_width=200)
    assert "[default: 12]" in result.output  # --demo-count


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"leadwerk {version('leadwerk')}\n"
