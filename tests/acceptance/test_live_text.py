"""LIVE_TEXT=broadcast with a real `storyworker run` on a Supabase-shaped database that
has Realtime's schema (tests/realtime.py): the events rebuild the chapter, a worker
killed mid-section is followed by a cut-back event and the text still rebuilds, no
schema or no privilege means one line and row mode, and realtime.send's swallowed
errors are counted while the chapter is still written."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import realtime
from tests.service import Service, wait_for
from tests.supabase import SupabaseDb, supabase_database

pytestmark = pytest.mark.slow

FALLBACK = "LIVE_TEXT=broadcast cannot work here"
PREFS = {"bullet_count": 3, "words_per_bullet": 200}


@pytest.fixture
def supa(pg) -> Iterator[SupabaseDb]:
    with supabase_database(pg) as db:
        db.migrate()
        yield db


@pytest.fixture
def run(supa, tmp_path) -> Iterator[Any]:
    started: list[Service] = []

    def start(**env: str) -> Service:
        env = {"WORKER_CONCURRENCY": "1", "LIVE_TEXT": "broadcast", **env}
        svc = Service(supa.dsn(), tmp_path, **env)
        started.append(svc)
        return svc.start()

    yield start
    for svc in started:
        if svc.proc and svc.proc.poll() is None:
            svc.kill_everything()
        print(f"--- {svc.log_path.name} ---", *svc.logs().splitlines()[-80:], sep="\n")


def seed_job(db: SupabaseDb, prefs: dict[str, Any] = PREFS) -> dict[str, uuid.UUID]:
    with db.connect() as conn:
        user = conn.execute("insert into auth.users (id) values (gen_random_uuid()) returning id")
        user_id = user.fetchone()["id"]
        story = conn.execute(
            "insert into sequences (user_id, title) values (%s, 'Tides') returning id", (user_id,)
        ).fetchone()["id"]
        chapter = conn.execute(
            "insert into chapters (sequence_id, chapter_number) values (%s, 1) returning id",
            (story,),
        ).fetchone()["id"]
        job = conn.execute(
            "insert into generation_jobs (sequence_id, chapter_id, user_id, user_preferences)"
            " values (%s, %s, %s, %s) returning id",
            (story, chapter, user_id, json.dumps(prefs)),
        ).fetchone()["id"]
    return {"user_id": user_id, "chapter_id": chapter, "job_id": job}


def state(db: SupabaseDb, job_id: uuid.UUID) -> dict[str, Any]:
    with db.connect() as conn:
        return conn.execute(
            "select j.status, j.attempts, j.checkpoint, j.current_step, c.content"
            " from generation_jobs j"
            " join chapters c on c.id = j.chapter_id where j.id = %s",
            (job_id,),
        ).fetchone()


def completed(db: SupabaseDb, job_id: uuid.UUID, timeout: float = 90) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        row = state(db, job_id)
        assert row["status"] not in ("failed", "cancelled"), row
        return row if row["status"] == "completed" else None

    return wait_for(done, timeout, "the job to complete", interval=0.1)


def live_in_the_row(db: SupabaseDb, job_id: uuid.UUID) -> str | None:
    """The chapter's text while its first section streams, before any checkpoint."""
    row = state(db, job_id)
    first = row["status"] == "processing" and row["current_step"] == "outline"
    return row["content"] if first and row["content"] else None


def events(db: SupabaseDb, chapter_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    found = realtime.messages(db, f"chapter:{chapter_id}")
    assert all(m["private"] and m["extension"] == "broadcast" for m in found)
    return [(m["event"], m["payload"]) for m in found]


def test_the_events_rebuild_exactly_the_final_chapter(supa, run):
    realtime.install(supa)
    ids = seed_job(supa)
    # Sections that stream for about a second each: time for deltas on the way (at most
    # one every LIVE_TEXT_INTERVAL_MS), not only at each checkpoint.
    svc = run(OFFLINE_LATENCY_MS="60")
    final = completed(supa, ids["job_id"])
    sent = events(supa, ids["chapter_id"])
    assert realtime.rebuild(sent) == final["content"] and len(final["content"]) > 2000
    deltas = [p for e, p in sent if e == "delta"]
    # Live: more deltas than sections, each one's text far under the 4 KB message limit.
    assert len(deltas) > 2 * PREFS["bullet_count"], len(deltas)
    assert len([p for p in deltas if p.get("committed")]) == PREFS["bullet_count"]
    assert deltas[-1].get("committed")
    assert max(len(str(p).encode()) for _, p in sent) < 4096
    assert {(p["job_id"], p["chapter_id"], p["attempt"]) for _, p in sent} == {
        (str(ids["job_id"]), str(ids["chapter_id"]), 1)
    }
    logs = svc.logs()
    assert logs.count("live text goes over Supabase Realtime Broadcast") == 1
    assert FALLBACK not in logs
    assert svc.stop() == 0


def freeze_past_checkpoint(svc: Service, db: SupabaseDb, ids: dict[str, uuid.UUID]) -> int:
    """SIGSTOP the busy worker at a moment when its deltas went past the chapter's last
    checkpoint (after at least one whole section); returns its pid."""

    def past() -> bool:
        row = state(db, ids["job_id"])
        done = (row["checkpoint"] or {}).get("sections_done", 0)
        committed = (row["checkpoint"] or {}).get("content_length", 0)
        sent = [p for e, p in events(db, ids["chapter_id"]) if e == "delta"]
        reach = max((p["offset"] + len(p["text"]) for p in sent), default=0)
        return row["status"] == "processing" and 1 <= done < 3 and reach > committed

    pid = wait_for(lambda: next((w["pid"] for w in svc.workers() if w["job_id"]), None), 30, "busy")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        wait_for(past, 60, "deltas past the last checkpoint", interval=0.02)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.3)  # a statement it had already sent commits meanwhile
        if past():
            return pid
        os.kill(pid, signal.SIGCONT)  # the checkpoint won the race: go on
    raise AssertionError("never caught the worker between two checkpoints")


def test_a_worker_killed_mid_section_is_followed_by_a_cut_back_event(supa, run):
    realtime.install(supa)
    ids = seed_job(supa)
    svc = run(OFFLINE_LATENCY_MS="100")
    pid = freeze_past_checkpoint(svc, supa, ids)
    at_kill = state(supa, ids["job_id"])["checkpoint"]["content_length"]
    os.kill(pid, signal.SIGKILL)
    final = completed(supa, ids["job_id"])
    assert final["attempts"] == 2
    sent = events(supa, ids["chapter_id"])
    resets = [p for e, p in sent if e == "reset" and p["attempt"] == 2]
    assert [(p["offset"], p["seq"]) for p in resets] == [(at_kill, 0)]
    first = [p for e, p in sent if e == "delta" and p["attempt"] == 1]
    assert max(p["offset"] + len(p["text"]) for p in first) > at_kill  # text was cut back
    assert realtime.rebuild(sent) == final["content"]
    assert svc.stop() == 0


@pytest.mark.parametrize("missing", ["schema", "privilege"])
def test_without_realtime_one_line_says_so_and_the_row_is_written(supa, run, missing):
    if missing == "privilege":
        realtime.install(supa)
        with psycopg.connect(supa.server.dsn(supa.name), autocommit=True) as conn:
            conn.execute(
                "revoke execute on function realtime.send(jsonb, text, text, boolean) from public"
            )
    ids = seed_job(supa)
    svc = run(OFFLINE_LATENCY_MS="60")
    seen_live = wait_for(
        lambda: live_in_the_row(supa, ids["job_id"]), 60, "live text", interval=0.02
    )
    final = completed(supa, ids["job_id"])
    assert final["content"].startswith(seen_live) and len(final["content"]) > 2000
    logs = svc.logs()
    lines = [line for line in logs.splitlines() if FALLBACK in line]
    assert len(lines) == 1, lines
    why = "does not exist" if missing == "schema" else "may not execute realtime.send"
    assert why in lines[0] and "live_text=row" in lines[0]
    flushes = int(re.search(r"job completed.*flushes=(\d+)", logs).group(1))
    assert flushes > PREFS["bullet_count"]  # live text went to the row, as it always did
    if missing == "privilege":
        assert realtime.messages(supa, f"chapter:{ids['chapter_id']}") == []
    assert svc.stop() == 0


def test_swallowed_send_errors_are_counted_and_the_chapter_is_still_written(supa, run, tmp_path):
    realtime.install(supa)
    svc = run()
    # The Realtime server stops keeping partitions: from now on every send fails inside
    # realtime.send, which says so only with a WARNING.
    with supa.connect() as conn:
        parts = conn.execute(
            "select inhrelid::regclass::text as name from pg_inherits"
            " where inhparent = 'realtime.messages'::regclass"
        ).fetchall()
    with psycopg.connect(supa.server.dsn(supa.name), autocommit=True) as conn:
        for part in parts:
            conn.execute(f"drop table {part['name']}")
    ids = seed_job(supa, {"bullet_count": 2, "words_per_bullet": 150})
    final = completed(supa, ids["job_id"])
    assert final["attempts"] == 1 and len(final["content"]) > 1000
    metrics = svc.get("/metrics")[1]
    found = re.search(r'storyworker_live_text_send_warnings_total\{worker="0"\} (\d+)', metrics)
    assert found and int(found.group(1)) >= 3, metrics[-2000:]
    logs = svc.logs()
    assert "realtime.send swallowed an error" in logs and "WarnSendingBroadcastMessage" in logs

    def status() -> str | None:
        out = subprocess.run(
            [sys.executable, "-m", "supervisor", "status"],
            env={**svc.env, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=tmp_path,
        ).stdout
        return out if "realtime.send warnings (lost)" in out else None

    assert re.search(r"live text: \d+ realtime\.send warnings", wait_for(status, 30, "status"))
    assert svc.stop() == 0
