"""Section 8: live text to readers, LIVE_TEXT=row against LIVE_TEXT=broadcast (issue 26).

One ~3,000-word chapter (4 sections of 750 words) streamed by the offline provider over
about a minute (12-word chunks, OFFLINE_LATENCY_MS=235 per chunk and call), by a real
`storyworker run` on a Supabase-shaped database with Realtime's schema
(tests/supabase.py, tests/realtime.py), as Supabase's `postgres` role. Measured from
the job's insert to its completion:

- events per reader: row mode, the UPDATEs of the chapter (each is one postgres_changes
  event for every subscriber); broadcast, the messages realtime.send inserted;
- bytes per reader: row mode, the row as JSON at each UPDATE (what postgres_changes
  puts in `new`; its envelope and column list are not counted, so this is a floor);
  broadcast, each message as Realtime's V2 serializer frames it for supabase-js (5
  header bytes, the joined topic `realtime:chapter:<id>`, the event, the metadata
  `{"id": ...}` and the payload as stored);
- WAL bytes (pg_current_wal_lsn before and after) and row versions of `chapters`
  (n_tup_upd, read after the service stopped, when its backends have reported).

Each run starts right after a CHECKPOINT. Row sizes are taken by an AFTER UPDATE
trigger into an UNLOGGED table, which writes no WAL, so the WAL figures are the
service's own (plus its lease renewals and registry beats, the same in both modes).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests import realtime
from tests.benchmarks.harness import Bench, Result, enqueue_jobs, storyworker, wait_until
from tests.supabase import SupabaseDb, supabase_database

PREFS = {"bullet_count": 4, "words_per_bullet": 750}
LATENCY_MS = "235"
#: Realtime's V2 user-broadcast frame: kind, topic size, event size, metadata size and
#: encoding, one byte each, before the topic, event, metadata and payload.
FRAME_HEADER = 5
TARGET_RATIO, TARGET_MESSAGE = 2.0, 4096

ROW_SIZES = """
create unlogged table public.bench_chapter_versions (bytes int not null);
create function public.bench_chapter_version() returns trigger language plpgsql as $$
begin
    insert into public.bench_chapter_versions values (octet_length(row_to_json(new)::text));
    return new;
end
$$;
create trigger bench_chapter_version after update on chapters
    for each row execute function public.bench_chapter_version();
"""


def seed(db: SupabaseDb) -> uuid.UUID:
    with db.connect() as conn:
        conn.execute(ROW_SIZES)
        user = conn.execute("insert into auth.users (id) values (gen_random_uuid()) returning id")
        story = conn.execute(
            "insert into sequences (user_id, title) values (%s, 'Bench') returning id",
            (user.fetchone()["id"],),
        ).fetchone()["id"]
        return conn.execute(
            "insert into chapters (sequence_id, chapter_number) values (%s, 1) returning id",
            (story,),
        ).fetchone()["id"]


def measure(db: SupabaseDb, logs: Path, mode: str) -> dict[str, float]:
    chapter = seed(db)
    with db.server.admin() as admin:
        # Each run starts right after a checkpoint, so neither pays more full-page
        # images than the other for where the timed checkpoints happen to fall.
        admin.execute("checkpoint")
    with (
        storyworker(
            db.dsn(), logs, LIVE_TEXT=mode, WORKER_CONCURRENCY="1", OFFLINE_LATENCY_MS=LATENCY_MS
        ),
        db.connect() as conn,
    ):
        wal = conn.execute("select pg_current_wal_lsn() as lsn").fetchone()["lsn"]
        before = conn.execute("select wal_records, wal_fpi from pg_stat_wal").fetchone()
        started = time.monotonic()
        (job,) = enqueue_jobs(conn, PREFS, chapter)
        wait_until(lambda: _status(conn, job) == "completed", 300, interval=0.2)
        seconds = time.monotonic() - started
        wal_bytes = conn.execute(
            "select pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint as n", (wal,)
        ).fetchone()["n"]
    with db.connect() as conn:
        found = _readers(conn, chapter, mode)
        content = conn.execute("select content from chapters where id = %s", (chapter,))
        text = content.fetchone()["content"]
        after = conn.execute("select wal_records, wal_fpi from pg_stat_wal").fetchone()
        updates = conn.execute(
            "select n_tup_upd from pg_stat_user_tables where relid = 'chapters'::regclass"
        ).fetchone()["n_tup_upd"]
    chapter_bytes = len(text.encode())
    return {
        **found,
        "seconds": seconds,
        "words": len(text.split()),
        "chapter_bytes": chapter_bytes,
        "ratio": found["bytes"] / chapter_bytes,
        "wal_bytes": wal_bytes,
        # Cluster-wide, read once every backend of the service has reported.
        "wal_records": after["wal_records"] - before["wal_records"],
        "wal_fpi": after["wal_fpi"] - before["wal_fpi"],
        "row_versions": updates,
    }


def _status(conn: psycopg.Connection, job: uuid.UUID) -> str:
    return conn.execute("select status from generation_jobs where id = %s", (job,)).fetchone()[
        "status"
    ]


def _readers(conn: psycopg.Connection, chapter: uuid.UUID, mode: str) -> dict[str, float]:
    """Events, bytes and the largest message that reached each reader."""
    if mode == "row":
        sizes = [r["bytes"] for r in conn.execute("select bytes from bench_chapter_versions")]
    else:
        topic = f"chapter:{chapter}"
        rows = conn.execute(
            "select id, event, payload::text as payload from realtime.messages where topic = %s",
            (topic,),
        ).fetchall()
        sizes = [_frame(f"realtime:{topic}", r["event"], r["id"], r["payload"]) for r in rows]
    return {"events": len(sizes), "bytes": sum(sizes), "largest": max(sizes, default=0)}


def _frame(topic: str, event: str, message_id: Any, payload: str) -> int:
    metadata = json.dumps({"id": str(message_id)}, separators=(",", ":"))
    return FRAME_HEADER + sum(len(part.encode()) for part in (topic, event, metadata, payload))


def run(bench: Bench, logs: Path) -> None:
    print(
        f"\n## 8. live text to readers: one chapter of {PREFS['bullet_count']} x"
        f" {PREFS['words_per_bullet']} words, offline provider at {LATENCY_MS} ms a chunk"
    )
    found: dict[str, list[dict[str, float]]] = {"row": [], "broadcast": []}
    for _ in range(bench.runs):
        for mode, samples in found.items():
            with supabase_database(bench.server) as db:
                db.migrate()
                realtime.install(db)
                samples.append(measure(db, logs, mode))
    rows = (
        ("events per reader", "events", "events", ""),
        ("bytes per reader", "bytes", "bytes", ""),
        ("bytes per reader / chapter bytes", "ratio", "x", f"broadcast target: <= {TARGET_RATIO}"),
        ("largest message", "largest", "bytes", f"broadcast target: < {TARGET_MESSAGE}"),
        ("WAL bytes, job insert to completion", "wal_bytes", "bytes", "broadcast <= row"),
        ("WAL records (pg_stat_wal)", "wal_records", "records", ""),
        ("WAL full-page images (pg_stat_wal)", "wal_fpi", "images", ""),
        ("row versions of chapters (n_tup_upd)", "row_versions", "rows", ""),
        ("chapter: words", "words", "words", ""),
        ("chapter: bytes", "chapter_bytes", "bytes", ""),
        ("job insert to completion", "seconds", "s", ""),
    )
    for label, key, unit, note in rows:
        for mode, samples in found.items():
            result = Result(f"{mode}: {label}", unit, [s[key] for s in samples], note)
            print(result.row(), flush=True)
