"""Everything between a job's inputs and the text of a chapter.

This package touches no SQL and forks nothing. It is given a chapter request, a
provider, a checkpoint and callbacks; the caller persists what the callbacks hand it.
"""
