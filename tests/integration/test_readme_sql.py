"""The README's "What the app writes" is enough: its SQL, run as written on a migrated
database, makes a job that a worker claims (issue 27)."""

from __future__ import annotations

import re
from pathlib import Path

from supervisor.db import queue

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readmes_first_job_is_claimed(conn):
    section = README.split("## What the app writes", 1)[1].split("\n## ", 1)[0]
    (sql,) = re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)
    statements = re.sub(r"--[^\n]*", "", sql).split(";")  # as psql reads the file
    results = [conn.execute(statement) for statement in filter(str.strip, statements)]
    job_id = results[-1].fetchone()["id"]
    claim = queue.claim(conn, "readme/1")
    assert claim is not None and claim.job_id == job_id
    row = conn.execute(
        "select chapter_id, user_preferences from generation_jobs where id = %s", (job_id,)
    ).fetchone()
    assert str(row["chapter_id"]) == "7d1c0c2e-0000-4000-8000-000000000003"
    assert row["user_preferences"] == {"genre": "mystery", "bullet_count": 4}
