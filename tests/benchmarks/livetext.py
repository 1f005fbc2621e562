"""Section 8: live text to readers, LIVE_TEXT=row against LIVE_TEXT=broadcast (issue 26).

One ~3,000-word chapter (4 sections of 750 words) streamed over about a minute (12-word
chunks, 235 ms apart), by a real `storyworker run` on a Supabase-shaped database with
Realtime's schema (tests/supabase.py, tests/realtime.py), as Supabase's `postgres`
role, with its own lease settings at their defaults. The model is an OpenAI-compatible
server on 127.0.0.1 (tests/fakeopenai.py) streaming one of two kinds of prose
(tests/benchmarks/prose.py): the offline provider's `placeholder` sections, which
compress to a fraction of their size, and `realistic` prose, which compresses as real
fiction does. Measured from the job's insert to its completion:

- events per reader: row mode, the UPDATEs of the chapter (each is one postgres_changes
  event for every subscriber); broadcast, the messages realtime.send inserted;
- bytes per reader: row mode, the row as JSON at each UPDATE (what postgres_changes
  puts in `new`; its envelope and column list are not counted, so this is a floor);
  broadcast, each message as Realtime's V2 serializer frames it for supabase-js (5
  header bytes, the joined topic `realtime:chapter:<id>`, the event, the metadata
  `{"id": ...}` and the payload as stored);
- WAL bytes (pg_current_wal_lsn before and after) and where they went (walscope.py,
  when the server is the benchmark's own), and row versions of `chapters` (n_tup_upd,
  read after the service stopped, when its backends have reported), each one a dead
  row (and dead TOAST chunks) left for vacuum.

Autovacuum is off for the whole section and each run starts right after a CHECKPOINT:
WAL is counted for the whole server, and an autovacuum visit (to any database, this
one's included) that falls in one run's minute and not another's is noise of its own
size (on 2026-12-03 autovacuum's ANALYZE of other databases' catalogs put about
370 KB into one broadcast run). Row sizes are taken by an AFTER UPDATE trigger into an
UNLOGGED table, which writes no WAL.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests import realtime
from tests.benchmarks import prose, walscope
from tests.benchmarks.harness import Bench, Result, enqueue_jobs, storyworker, wait_until
from tests.fakeopenai import EMBEDDING_MODEL, MODEL, VALID_KEY, FakeOpenAI, stream_reply
from tests.pg import PgServer
from tests.supabase import SupabaseDb, supabase_database

PREFS = {"bullet_count": 4, "words_per_bullet": 750}
LATENCY = 0.235
MODES = ("row", "broadcast")
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


def service_env(mode: str, model: FakeOpenAI) -> dict[str, str]:
    return {
        "LIVE_TEXT": mode,
        "WORKER_CONCURRENCY": "1",
        "GENERATION_PROVIDER": "openai",
        "GENERATION_FALLBACK": "",
        "OPENAI_API_KEY": VALID_KEY,
        "OPENAI_BASE_URL": model.base_url,
        "OPENAI_MODEL": MODEL,
        "OPENAI_EMBEDDING_MODEL": EMBEDDING_MODEL,
        # The defaults, not the test suite's fast ones: lease renewals write the job row.
        "LEASE_SECONDS": "60",
        "WORKER_TIMEOUT_SECONDS": "300",
    }


def measure(db: SupabaseDb, logs: Path, mode: str, kind: str) -> dict[str, float]:
    chapter = seed(db)
    with db.server.admin() as admin:
        admin.execute("checkpoint")
    with (
        FakeOpenAI() as model,
        storyworker(db.dsn(), logs, **service_env(mode, model)),
        db.connect() as conn,
    ):
        for chunks in prose.sections(kind, PREFS["bullet_count"], PREFS["words_per_bullet"]):
            paced = dataclasses.replace(stream_reply(chunks), delay=LATENCY, chunk_delay=LATENCY)
            model.queue("stream", paced)
        start = _lsn(conn)
        before = conn.execute("select wal_records, wal_fpi from pg_stat_wal").fetchone()
        started = time.monotonic()
        (job,) = enqueue_jobs(conn, PREFS, chapter)
        wait_until(lambda: _status(conn, job) == "completed", 300, interval=0.2)
        seconds = time.monotonic() - started
        end = _lsn(conn)
    with db.connect() as conn:
        found = {**_readers(conn, chapter, mode), **_chapter(conn, chapter)}
        after = conn.execute("select wal_records, wal_fpi from pg_stat_wal").fetchone()
        found["row_versions"] = conn.execute(
            "select n_tup_upd from pg_stat_user_tables where relid = 'chapters'::regclass"
        ).fetchone()["n_tup_upd"]
    return {
        **found,
        **_shares(db, start, end),
        "seconds": seconds,
        "ratio": found["bytes"] / found["chapter_bytes"],
        "wal_bytes": _diff(db, end, start),
        # Cluster-wide, read once every backend of the service has reported.
        "wal_records": after["wal_records"] - before["wal_records"],
        "wal_fpi": after["wal_fpi"] - before["wal_fpi"],
    }


def _lsn(conn: psycopg.Connection) -> str:
    return str(conn.execute("select pg_current_wal_lsn() as lsn").fetchone()["lsn"])


def _diff(db: SupabaseDb, end: str, start: str) -> int:
    with db.connect() as conn:
        return conn.execute("select pg_wal_lsn_diff(%s, %s)::bigint as n", (end, start)).fetchone()[
            "n"
        ]


def _status(conn: psycopg.Connection, job: uuid.UUID) -> str:
    return conn.execute("select status from generation_jobs where id = %s", (job,)).fetchone()[
        "status"
    ]


def _chapter(conn: psycopg.Connection, chapter: uuid.UUID) -> dict[str, float]:
    """The finished chapter's size, words, and the share of its size TOAST stores."""
    row = conn.execute(
        "select content, pg_column_size(content)::float / octet_length(content) as stored"
        " from chapters where id = %s",
        (chapter,),
    ).fetchone()
    text = row["content"]
    size = len(text.encode())
    return {"chapter_bytes": size, "words": len(text.split()), "stored": row["stored"]}


def _shares(db: SupabaseDb, start: str, end: str) -> dict[str, float]:
    """The run's WAL by where it went, when pg_waldump can read the server's WAL."""
    if db.server.pgdata is None or walscope.waldump() is None:
        return {}
    with psycopg.connect(db.server.dsn(db.name), row_factory=dict_row) as conn:
        names = walscope.families(conn)
        oid = conn.execute(
            "select oid from pg_database where datname = current_database()"
        ).fetchone()["oid"]
    found = walscope.shares(db.server.pgdata, start, end, oid, names)
    return {f"wal: {k}": v for k, v in found.buckets.items()} | {"wal: images": found.images}


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


@contextlib.contextmanager
def autovacuum_off(server: PgServer) -> Iterator[None]:
    """Autovacuum paused on the whole server (and no worker of it still running)."""
    with server.admin() as admin:
        admin.execute("alter system set autovacuum = off")
        admin.execute("select pg_reload_conf()")
        wait_until(lambda: _vacuuming(admin) == 0, 120, interval=0.2)
    try:
        yield
    finally:
        with server.admin() as admin:
            admin.execute("alter system reset autovacuum")
            admin.execute("select pg_reload_conf()")


def _vacuuming(conn: psycopg.Connection) -> int:
    return conn.execute(
        "select count(*) from pg_stat_activity where backend_type = 'autovacuum worker'"
    ).fetchone()[0]


ROWS = (
    ("events per reader", "events", "events", ""),
    ("bytes per reader", "bytes", "bytes", ""),
    ("bytes per reader / chapter bytes", "ratio", "x", f"broadcast target: <= {TARGET_RATIO}"),
    ("largest message", "largest", "bytes", f"broadcast target: < {TARGET_MESSAGE}"),
    ("WAL bytes, job insert to completion", "wal_bytes", "bytes", "broadcast <= row"),
    *(
        (f"  of which {bucket}", f"wal: {bucket}", "bytes", "")
        for bucket in (*walscope.FAMILIES, "storyworker schema", "other relations")
    ),
    ("  of which commit records", "wal: commit records", "bytes", ""),
    ("  of which other databases and the server's own", "wal: other", "bytes", ""),
    ("  full-page images among them", "wal: images", "bytes", ""),
    ("WAL records (pg_stat_wal)", "wal_records", "records", ""),
    ("WAL full-page images (pg_stat_wal)", "wal_fpi", "images", ""),
    ("row versions of chapters (n_tup_upd)", "row_versions", "rows", ""),
    ("chapter: words", "words", "words", ""),
    ("chapter: bytes", "chapter_bytes", "bytes", ""),
    ("chapter: stored size / size (TOAST, pglz)", "stored", "x", ""),
    ("job insert to completion", "seconds", "s", ""),
)


def run(bench: Bench, logs: Path) -> None:
    print(
        f"\n## 8. live text to readers: one chapter of {PREFS['bullet_count']} x"
        f" {PREFS['words_per_bullet']} words, 12-word chunks {LATENCY * 1000:.0f} ms apart"
    )
    found = {(kind, mode): [] for kind in prose.KINDS for mode in MODES}
    with autovacuum_off(bench.server):
        for _ in range(bench.runs):
            for (kind, mode), samples in found.items():
                with supabase_database(bench.server) as db:
                    db.migrate()
                    realtime.install(db)
                    samples.append(measure(db, logs, mode, kind))
    for kind in prose.KINDS:
        print(f"\n### {kind} prose", flush=True)
        for label, key, unit, note in ROWS:
            for mode in MODES:
                values = [s[key] for s in found[(kind, mode)] if key in s]
                if values or not key.startswith("wal: "):
                    print(Result(f"{mode}: {label}", unit, values, note).row(), flush=True)
