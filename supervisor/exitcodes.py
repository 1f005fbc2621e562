"""Exit codes: how storyworker's processes tell their parents what happened.

systemd's RestartPreventExitStatus and supervisord's exitcodes name CANNOT_BOOT and
CONFIG so that a service that can never start is not restarted forever.
"""

OK = 0
FAILURE = 1
#: Workers die before they can claim anything (bad import, bad configuration).
CANNOT_BOOT = 3
#: The database is unreachable or not migrated at start-up.
UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
#: Invalid configuration.
CONFIG = 78  # sysexits EX_CONFIG
