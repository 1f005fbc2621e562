"""A PostgreSQL server for the test suite: `DATABASE_URL` when set, otherwise a
throwaway server started with pgserver. One template database is migrated once per
session; each test gets its own clone of it."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from supervisor.db.migrate import migrate

TEMPLATE = "storyworker_test_template"


@dataclass
class PgServer:
    admin_dsn: str
    pgdata: str | None  # set when the suite owns the server (it can stop and start it)

    def dsn(self, dbname: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(self.admin_dsn, autocommit=True)

    def build_template(self) -> None:
        with self.admin() as conn:
            conn.execute(f"drop database if exists {TEMPLATE} with (force)")
            conn.execute(f"create database {TEMPLATE}")
        with psycopg.connect(self.dsn(TEMPLATE), autocommit=True) as conn:
            from psycopg.rows import dict_row

            conn.row_factory = dict_row
            migrate(conn)

    @contextlib.contextmanager
    def database(self, template: str = TEMPLATE) -> Iterator[str]:
        """A fresh database cloned from `template`; dropped afterwards."""
        name = f"storyworker_test_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f"create database {name} template {template}")
        try:
            yield self.dsn(name)
        finally:
            with self.admin() as conn:
                conn.execute(f"drop database if exists {name} with (force)")

    @property
    def restartable(self) -> bool:
        return self.pgdata is not None

    def stop(self) -> list[str]:
        """Stop the suite's own server; returns the options to start it with again."""
        if self.pgdata is None:
            raise RuntimeError("the server is external (DATABASE_URL); it cannot be stopped")
        from pgserver._commands import pg_ctl

        opts = shlex.split(Path(self.pgdata, "postmaster.opts").read_text())[1:]
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=_pg_user(), timeout=30)
        return [o for i, o in enumerate(opts) if o != "-D" and (i == 0 or opts[i - 1] != "-D")]

    def start(self, options: list[str]) -> None:
        from pgserver._commands import pg_ctl

        pg_ctl(
            ["-w", "-o", shlex.join(options), "start"],
            pgdata=self.pgdata,
            user=_pg_user(),
            timeout=30,
        )


def _pg_user() -> str | None:
    return "pgserver" if os.geteuid() == 0 else None


@contextlib.contextmanager
def throwaway_server() -> Iterator[PgServer]:
    """The session's server: DATABASE_URL's, or a throwaway one removed afterwards."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield PgServer(admin_dsn=external, pgdata=None)
        return
    import pgserver

    root = tempfile.mkdtemp(prefix="storyworker-pg-")
    pgdata = os.path.join(root, "pgdata")
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    try:
        yield PgServer(admin_dsn=server.get_uri(), pgdata=pgdata)
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
