"""What storyworker requires of the role it runs as, checked by `run` before any fork.

The worker must see every row of generation_jobs, chapters and sequences (row level
security off for it: the tables' owner, a superuser or BYPASSRLS), or it would claim
nothing, silently. And it must be the role the guard trigger trusts with the worker's
columns of generation_jobs: one with the privileges of that table's owner (migration
0006), or every claim would be refused.
"""

from __future__ import annotations

import psycopg

from supervisor.db import sql
from supervisor.db.migrate import explained
from supervisor.errors import ConfigError


class UntrustedRoleError(ConfigError):
    """storyworker cannot work as this database role."""


def require_worker_role(conn: psycopg.Connection) -> None:
    """Raise UntrustedRoleError, one line naming the role and what it needs, unless
    the connection's role can run storyworker's workers. Tables not created yet are
    left to the migration check."""
    with explained(conn, "checking the worker's role", again=False):
        row = sql.one(conn, "worker_role")
    if row is None:
        return
    role = row["role"]
    if row["blinded"]:
        tables = ", ".join(row["blinded"])
        raise UntrustedRoleError(
            f"role {role} cannot see every row of {tables}: row level security applies to"
            " it; run storyworker as a role with BYPASSRLS (Supabase's postgres has it)"
            " or as the tables' owner"
        )
    if not row["trusted"]:
        raise UntrustedRoleError(
            f"role {role} is not storyworker's worker role: only the owner of"
            f" generation_jobs ({row['owner']}) and roles with its privileges may write"
            f" the worker's columns; run storyworker as {row['owner']}"
        )
