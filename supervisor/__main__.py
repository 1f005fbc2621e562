"""`python -m supervisor` is the `storyworker` command."""

from supervisor.cli import main

main(prog_name="storyworker")
