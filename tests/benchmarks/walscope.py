"""Where the WAL of a stretch of time went, read with pg_waldump (shipped with pgserver's
PostgreSQL) from the data directory of the benchmark's own server.

Each record is put in one bucket: by the relation its first block belongs to
(`family`: a table with its indexes and its TOAST table), commit and abort records
with the database of the transaction's other records (or its subtransactions'), and
what touches no relation of the database ("other": other databases, checkpoints,
running-transaction snapshots). Full-page images are counted apart, as the bytes a
record carries beyond its own (`tot - rec`).
"""

from __future__ import annotations

import collections
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

_RECORD = re.compile(
    r"rmgr: (?P<rmgr>\S+)\s+len \(rec/tot\):\s+(?P<rec>\d+)/\s*(?P<tot>\d+),"
    r" tx:\s+(?P<tx>\d+), lsn: \S+, prev \S+, desc: (?P<desc>.*)"
)
_BLOCK = re.compile(r"rel \d+/(?P<db>\d+)/(?P<node>\d+)")

#: The relation families reported, in order (tables of `public` without their schema).
FAMILIES = ("realtime.messages", "chapters", "generation_jobs")

FAMILY_NAMES = """
with served as (
    -- an index is named after its table, a TOAST table after the table it stores for
    select c.oid, coalesce((select i.indrelid from pg_index i where i.indexrelid = c.oid), c.oid)
               as tab
      from pg_class c
     where pg_relation_filenode(c.oid) is not null
), owner as (
    select s.oid, coalesce((select t.oid from pg_class t where t.reltoastrelid = s.tab), s.tab)
               as tab
      from served s
)
select pg_relation_filenode(o.oid) as node, n.nspname || '.' || c.relname as family
  from owner o
  join pg_class c on c.oid = o.tab
  join pg_namespace n on n.oid = c.relnamespace
"""


@dataclass
class WalShares:
    """WAL bytes by bucket, and the bytes of full-page images among them."""

    buckets: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    images: int = 0

    @property
    def total(self) -> int:
        return sum(self.buckets.values())


def waldump() -> Path | None:
    """pg_waldump of pgserver's PostgreSQL, when it is installed."""
    try:
        import pgserver
    except ImportError:
        return None
    path = Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_waldump"
    return path if path.exists() else None


def families(conn: psycopg.Connection) -> dict[str, str]:
    """Filenode -> table family, for the relations of `conn`'s database; a partition
    of realtime.messages counts as realtime.messages."""
    found = {}
    for row in conn.execute(FAMILY_NAMES):
        name = re.sub(r"^realtime\.messages_\w+$", "realtime.messages", row["family"])
        name = name.removeprefix("public.")
        found[str(row["node"])] = "storyworker schema" if name.startswith("storyworker.") else name
    return found


def shares(pgdata: str, start: str, end: str, database: int, names: dict[str, str]) -> WalShares:
    """The WAL from `start` to `end` (LSNs) in buckets: FAMILIES, "storyworker schema",
    "other relations" of `database`, its transactions' "commit records", and "other"
    (other databases, and records of no relation: checkpoints, snapshots)."""
    out = subprocess.run(
        [str(waldump()), "-p", str(Path(pgdata, "pg_wal")), "-s", start, "-e", end],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    records = [m.groupdict() for m in map(_RECORD.match, out.splitlines()) if m]
    databases: dict[str, str] = {}
    for record in records:
        block = _BLOCK.search(record["desc"])
        if block and record["tx"] != "0":
            databases.setdefault(record["tx"], block["db"])
    found = WalShares()
    for record in records:
        size, own = int(record["tot"]), int(record["rec"])
        found.buckets[_bucket(record, databases, str(database), names)] += size
        found.images += size - own
    return found


def _bucket(record: dict, databases: dict[str, str], database: str, names: dict) -> str:
    block = _BLOCK.search(record["desc"])
    if record["rmgr"] == "Transaction":
        # A commit names its subtransactions, whose own records say where they wrote.
        named = record["desc"].partition("subxacts:")[2].partition(";")[0]
        xids = [record["tx"], *re.findall(r"\d+", named)]
        ours = any(databases.get(xid) == database for xid in xids)
        return "commit records" if ours else "other"
    if block is None or block["db"] != database:
        return "other"
    name = names.get(block["node"], "other relations")
    return name if name in (*FAMILIES, "storyworker schema") else "other relations"
