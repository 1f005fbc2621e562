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


def test_the_exit_code_table_is_the_one_in_the_code():
    from supervisor import exitcodes

    section = README.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", section, flags=re.MULTILINE)
    assert [int(code) for code, _ in rows] == list(exitcodes.TABLE)
    assert len(set(exitcodes.TABLE)) == len(exitcodes.TABLE)


def test_activating_the_environment_is_said_before_the_first_bare_command():
    first_bare = min(README.index(f"\n{line}") for line in storyworker_commands()[:1])
    said = README.find(". .venv/bin/activate")
    assert 0 <= said < first_bare


def test_what_the_app_writes_shows_a_user_a_story_a_chapter_and_a_job():
    section = README.split("## What the app writes", 1)[1].split("\n## ", 1)[0]
    (sql,) = re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)
    for table in ("auth.users", "sequences", "chapters", "generation_jobs"):
        assert f"insert into {table} " in sql, table
