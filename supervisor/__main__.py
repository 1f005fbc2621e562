"""`python -m supervisor` is the `storyworker` command."""

from supervisor.launch import main

main()
