"""Behind a transaction-mode pooler (a real PgBouncer, as Supabase's port 6543): LISTEN
cannot work, so workers find that out by themselves, poll, and keep working."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from tests.acceptance.conftest import PREFS
from tests.service import free_port, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("pgbouncer") is None, reason="pgbouncer is not installed"),
]

INI = """
[databases]
app = {server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {dir}/users.txt
pool_mode = transaction
max_client_conn = 100
default_pool_size = 20
logfile = {dir}/pgbouncer.log
pidfile = {dir}/pgbouncer.pid
ignore_startup_parameters = extra_float_digits
"""


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def pgbouncer(database_url):
    params = conninfo_to_dict(database_url)
    server = " ".join(
        f"{key}={params[key]}"
        for key in ("host", "port", "dbname", "user", "password")
        if params.get(key)
    )
    workdir = Path(tempfile.mkdtemp(prefix="storyworker-pgbouncer-"))
    workdir.chmod(0o777)  # pgbouncer, started as root, drops to an unprivileged user
    port = free_port()
    (workdir / "users.txt").write_text('"postgres" ""\n')
    ini = workdir / "pgbouncer.ini"
    ini.write_text(INI.format(server=server, port=port, dir=workdir))
    ini.chmod(0o600)  # it may hold the server's password
    command = ["pgbouncer", str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # pgserver's own user can reach its socket directory; any other will do for TCP.
        command[1:1] = ["-u", "pgserver" if _user_exists("pgserver") else "nobody"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    dsn = f"postgresql://postgres@127.0.0.1:{port}/app"

    def reachable() -> bool:
        try:
            with psycopg.connect(dsn, prepare_threshold=None, connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    wait_for(reachable, 10, "pgbouncer", interval=0.1)
    yield dsn
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def test_workers_fall_back_to_polling_and_keep_working(service, jobs, pgbouncer):
    created = jobs(4, {**PREFS, "bullet_count": 2})
    svc = service(
        DATABASE_URL=pgbouncer,
        DATABASE_PREPARED_STATEMENTS="false",
        WORKER_CONCURRENCY="2",
        POLL_INTERVAL_MS="300",
    ).start()
    with psycopg.connect(
        pgbouncer, autocommit=True, prepare_threshold=None, row_factory=dict_row
    ) as conn:
        wait_for(
            lambda: (
                conn.execute(
                    "select count(*) as n from generation_jobs where status = 'completed'"
                ).fetchone()["n"]
                == len(created)
            ),
            60,
            "every job through the pooler",
        )
    logs = svc.logs()
    assert logs.count("polling instead") == 2  # said once by each worker
    assert "pickup=poll" in logs
    status, ready = svc.get("/ready")
    assert status == 200 and ready["checks"]["listener"]["detail"] == "poll"
    assert svc.stop() == 0
