"""Exit codes: how storyworker's processes tell their parents what happened.

systemd's RestartPreventExitStatus and supervisord's exitcodes name CANNOT_BOOT and
CONFIG so that a service that can never start is not restarted forever.
"""

OK = 0
#: A command failed (a job that failed, for `watch`; an unhealthy answer, for `health`).
FAILURE = 1
#: The command line itself is wrong (click's own code for usage errors).
USAGE = 2
#: Workers die before they can claim anything (bad import, bad configuration).
CANNOT_BOOT = 3
#: `watch`: the job was cancelled.
CANCELLED = 4
#: `watch`: there is no job with that id.
NO_SUCH_JOB = 66  # sysexits EX_NOINPUT
#: The database is unreachable or not migrated at start-up.
UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
#: Invalid configuration.
CONFIG = 78  # sysexits EX_CONFIG
#: Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130
