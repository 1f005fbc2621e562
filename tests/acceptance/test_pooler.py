"""Behind a transaction-mode pooler (a real PgBouncer, as Supabase's port 6543): LISTEN
cannot work, so workers find that out by themselves, poll, and keep working."""

from __future__ import annotations

import os
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
app = host={host} dbname={dbname} user=postgres

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


@pytest.fixture
def pgbouncer(database_url):
    params = conninfo_to_dict(database_url)
    if not str(params.get("host", "")).startswith("/"):
        pytest.skip("the test database is not on a local socket")
    workdir = Path(tempfile.mkdtemp(prefix="storyworker-pgbouncer-"))
    workdir.chmod(0o777)  # pgbouncer drops root for the server's own user
    port = free_port()
    (workdir / "users.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        INI.format(host=params["host"], dbname=params["dbname"], port=port, dir=workdir)
    )
    command = ["pgbouncer", str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "pgserver"]
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
