"""A real PgBouncer in transaction mode (Supabase's port 6543 is one such pooler) in
front of the test PostgreSQL, for the acceptance tests and the benchmarks."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from tests.service import free_port, wait_for

INI = """
[databases]
app = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/users.txt
admin_users = {user}
pool_mode = transaction
max_client_conn = 500
default_pool_size = {pool_size}
reserve_pool_size = 0
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
"""


def available() -> bool:
    return shutil.which("pgbouncer") is not None


def version() -> str:
    """PgBouncer's version, e.g. "1.18.0"."""
    out = subprocess.run(["pgbouncer", "--version"], capture_output=True, text=True, check=False)
    first = out.stdout.splitlines()[0] if out.stdout else "unknown"
    return first.removeprefix("PgBouncer ").strip()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def pgbouncer(
    database_url: str, pool_size: int, settings: dict[str, str] | None = None
) -> Iterator[str]:
    """A transaction-mode PgBouncer with at most `pool_size` server connections in
    front of `database_url`'s server and database; yields its DSN. `settings` are
    more lines of its [pgbouncer] section (e.g. server_login_retry)."""
    params = conninfo_to_dict(database_url)
    server = " ".join(
        f"{key}={params[key]}"
        for key in ("host", "port", "dbname", "user", "password")
        if params.get(key)
    )
    workdir = Path(tempfile.mkdtemp(prefix="storyworker-pgbouncer-"))
    workdir.chmod(0o777)  # pgbouncer, started as root, drops to an unprivileged user
    port = free_port()
    user = params.get("user", "postgres")
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    ini = workdir / "pgbouncer.ini"
    extra = "".join(f"{key} = {value}\n" for key, value in (settings or {}).items())
    ini.write_text(
        INI.format(server=server, port=port, dir=workdir, pool_size=pool_size, user=user) + extra
    )
    ini.chmod(0o600)  # it may hold the server's password
    command = ["pgbouncer", str(ini)]
    if os.geteuid() == 0:
        # pgserver's own user can reach its socket directory; any other will do for TCP.
        command[1:1] = ["-u", "pgserver" if _user_exists("pgserver") else "nobody"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    dsn = f"postgresql://{user}@127.0.0.1:{port}/app"

    def reachable() -> bool:
        try:
            with psycopg.connect(dsn, prepare_threshold=None, connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    try:
        wait_for(reachable, 10, "pgbouncer", interval=0.1)
        yield dsn
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def admin(dsn: str, command: str) -> None:
    """Runs one command (e.g. `KILL app`, `RESUME app`) on the admin console of the
    PgBouncer at `dsn`. The console speaks only the simple query protocol: a client-side
    cursor sends it."""
    console = conninfo_to_dict(dsn) | {"dbname": "pgbouncer"}
    with psycopg.connect(
        **console, autocommit=True, prepare_threshold=None, cursor_factory=psycopg.ClientCursor
    ) as conn:
        conn.execute(command)
