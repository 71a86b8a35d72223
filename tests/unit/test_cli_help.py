"""The operators' command line explains itself without asking for anything: `--help` of every command."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from maildash.cli import app


def command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command and group, by the words that call it (typer's groups carry `commands`)."""
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from command_paths(sub, (*path, name))


def test_help_of_every_command_answers_without_asking_for_a_password() -> None:
    root = typer.main.get_command(app)
    paths = list(command_paths(root))
    assert ("workspace", "create") in paths
    assert ("campaign", "show") in paths
    runner = CliRunner()
    for path in paths:
        # No password anywhere, and a closed stdin: a prompt would end in an error (Abort), not in help.
        result = runner.invoke(app, [*path, "--help"], input="", env={"MAILDASH_CLI_PASSWORD": None})
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output, path
        assert "Password" not in result.output, (path, result.output)
