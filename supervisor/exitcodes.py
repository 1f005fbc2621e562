"""Exit codes: one table for every command (the README's "Exit codes" has the same).

systemd's RestartPreventExitStatus and supervisord's exitcodes name CANNOT_BOOT and
CONFIG so that a service that can never start is not restarted forever.
"""

OK = 0
#: The command did not do what was asked, and it is nobody's configuration: `watch`'s
#: job failed, `health` answered unhealthy, `jobs retry`/`cancel` met a job in a state
#: that does not allow it.
FAILURE = 1
#: The command line itself is wrong (click's own code for usage errors): an unknown
#: option, an id that is not a UUID, a --status the command does not take, bad --prefs.
USAGE = 2
#: `run`: workers die before they can claim anything (a rejected key, an unknown or
#: retired model).
CANNOT_BOOT = 3
#: `watch`: the job was cancelled.
CANCELLED = 4
#: There is no job (`watch`, `jobs show`/`retry`/`cancel`) or chapter (`enqueue`) with
#: that id.
NO_SUCH_JOB = 66  # sysexits EX_NOINPUT
#: The database is unreachable, refused for now (a lock wait) or not migrated.
UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
#: Invalid configuration, from a variable, `.env` or a flag that stands for one
#: (`--concurrency`, `--port`, `--provider`, `demo --database-url`): a malformed DSN
#: (a port that is not a number included), a taken health port, a role row level
#: security would blind.
CONFIG = 78  # sysexits EX_CONFIG
#: Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED = 130

#: Every code with its one-line meaning, in the README's order (tests check they agree).
TABLE = {
    OK: "success",
    FAILURE: "did not do what was asked (watch: the job failed; health: unhealthy)",
    USAGE: "usage error",
    CANNOT_BOOT: "workers cannot boot",
    CANCELLED: "watch: the job was cancelled",
    NO_SUCH_JOB: "no such job or chapter",
    UNAVAILABLE: "database unavailable or not migrated",
    CONFIG: "bad configuration",
    INTERRUPTED: "interrupted",
}
