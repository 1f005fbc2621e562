"""The README stays true: its commands parse, its table lists every setting."""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path

import click
import pytest

from supervisor.cli import main
from supervisor.config import variables

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
PLACEHOLDERS = {"JOB_ID": str(uuid.uuid4()), "CHAPTER_ID": str(uuid.uuid4())}


def shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)
    return [
        line.split("  #")[0].strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip()
    ]


def test_the_first_lines_are_the_two_newcomer_commands():
    first = shell_lines()[:2]
    assert first[0].endswith(".venv/bin/storyworker demo") and "pip install -e ." in first[0]
    assert first[1].endswith(".venv/bin/pytest") and "pip install -e '.[test,llama]'" in first[1]
    assert "storyworker demo" in "\n".join(README.splitlines()[:5])


def storyworker_commands() -> list[str]:
    return [line for line in shell_lines() if line.startswith("storyworker ")]


@pytest.mark.parametrize("line", storyworker_commands())
def test_every_storyworker_command_in_the_readme_parses(line):
    for name, value in PLACEHOLDERS.items():
        line = line.replace(name, value)
    name, *args = shlex.split(line)
    command: click.Command | None = main
    while isinstance(command, click.Group):
        name, *args = args
        command = command.get_command(click.Context(command), name)
        assert command is not None, f"no such command in {line!r}"
    # Parses options and arguments (types included) as a real invocation would.
    command.make_context(name, args)


def test_every_setting_is_in_the_configuration_table():
    for variable in variables():
        assert f"`{variable}`" in README, variable
