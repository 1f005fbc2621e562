"""Mutation run: `python -m tests.mutations` (see `--help`).

Each mutation in `catalog.MUTATIONS` plants one known bug, a text substitution in one
file of supervisor/, generation/ or health/, in a scratch copy of the tree, and runs
the tests that should catch it there (and the rest of the suite when they do not). A
mutation whose text no longer occurs exactly once is reported stale, never skipped.
The real tree is only read.
"""
