"""storyworker's composition root: CLI, configuration, queue SQL, process pool, worker loop.

Note: supervisord's own PyPI package is also importable as ``supervisor``. Install
supervisord from the OS packages (or pipx), never into storyworker's environment.
"""

__version__ = "0.1.0"
