"""`python -m tests.benchmarks [--runs N] [--only NAME ...]`: print the benchmark table."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.benchmarks import dashboard, livetext, order, ours, peers, pooled, story
from tests.benchmarks.harness import Bench, Result
from tests.pg import throwaway_server

SECTIONS = (
    "pickup",
    "overhead",
    "jobcost",
    "scaling",
    "memory",
    "ttft",
    "pooler",
    "livetext",
    "dashboard",
    "story",
    "order",
)


def header(bench: Bench) -> None:
    import importlib.metadata as md

    with bench.database() as dsn:
        import psycopg

        with psycopg.connect(dsn) as conn:
            server = conn.execute("show server_version").fetchone()[0]
            server += f" (wal_level={conn.execute('show wal_level').fetchone()[0]})"
    versions = ", ".join(
        f"{p} {md.version(p)}" for p in ("psycopg", "procrastinate", "pgqueuer") if _installed(p)
    )
    cpu = subprocess.run(
        ["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"# storyworker benchmarks, {time.strftime('%Y-%m-%d')}")
    print(
        f"# machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()},"
        f" PostgreSQL {server}; {versions}; {bench.runs} runs each, median and min-max\n"
    )


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def repeat(
    bench: Bench,
    result: Result,
    measure: Callable[[str], float | list[float]],
    runs: int | None = None,
) -> Result:
    for _ in range(runs or bench.runs):
        with bench.database() as dsn:
            value = measure(dsn)
        result.samples += value if isinstance(value, list) else [value]
    print(result.row(), flush=True)
    return result


def ratio(name: str, a: Result, b: Result, target: str = "") -> None:
    value = a.median / b.median if b.samples and b.median else float("nan")
    print(f"{name:<58} {value:>12.2f} x        {'':>17}  {target}", flush=True)


def run_pickup(bench: Bench, logs: Path) -> None:
    print("## 1. pick-up latency: INSERT commit -> claim, idle worker (ms)")
    ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
    ours_listen = repeat(
        bench,
        Result("storyworker, LISTEN/NOTIFY", "ms"),
        lambda dsn: ms(ours.pickup_latencies(dsn, logs, 50 // bench.runs + 1)),
    )
    results = [ours_listen]
    for peer, ok in peers.available().items():
        if ok:
            results.append(
                repeat(
                    bench,
                    Result(f"{peer}, LISTEN/NOTIFY", "ms"),
                    lambda dsn, p=peer: ms(peers.pickup_latencies(p, dsn, 50 // bench.runs + 1)),
                )
            )
    repeat(
        bench,
        Result("storyworker, polling fallback (POLL_INTERVAL_MS=5000)", "ms", note="10 samples"),
        lambda dsn: ms(ours.pickup_latencies(dsn, logs, 10, listen=False)),
        1,
    )
    best_peer = min(results[1:], key=lambda r: r.median, default=None)
    if best_peer:
        ratio(
            f"storyworker median / {best_peer.name.split(',')[0]} median",
            ours_listen,
            best_peer,
            "target: < 1",
        )


def run_overhead(bench: Bench, jobs: int = 5000) -> None:
    print(f"\n## 2. queue overhead: {jobs} empty jobs drained (jobs/s)")
    found = {}
    for workers in (1, 4):
        found[("ours", workers)] = repeat(
            bench,
            Result(f"storyworker claim+finish, {workers} worker(s)", "jobs/s"),
            lambda dsn, w=workers: ours.drain_rate(dsn, jobs, w),
        )
    found["bare"] = repeat(
        bench,
        Result("bare SKIP LOCKED claim-then-finish, 4 workers", "jobs/s"),
        lambda dsn: ours.drain_rate(dsn, jobs, 4, bare=True),
    )
    found["ceiling"] = repeat(
        bench,
        Result("commit ceiling: single-row UPDATE loop, 4 clients", "commits/s"),
        lambda dsn: ours.commit_ceiling(dsn, 4),
    )
    best = None
    for peer, ok in peers.available().items():
        if ok:
            r = repeat(
                bench,
                Result(f"{peer}, 4 worker processes", "jobs/s"),
                lambda dsn, p=peer: peers.drain_rate(p, dsn, jobs, 4),
            )
            best = r if best is None or r.median > best.median else best
    if best:
        ratio(
            f"storyworker 4 workers / {best.name.split(',')[0]}",
            found[("ours", 4)],
            best,
            "target: >= 2",
        )
    ratio(
        "storyworker 4 workers / bare SKIP LOCKED loop",
        found[("ours", 4)],
        found["bare"],
        "target: >= 0.8",
    )


def run_jobcost(bench: Bench, logs: Path) -> None:
    print("\n## 3. full job cost: offline provider at zero latency, 4 sections, rate limit off")
    writes = Result("write transactions per job (transaction ids)", "commits", note="target: <= 8")
    commits = Result(
        "all commits per job, read-only included (pg_stat_database)",
        "commits",
        note="LISTEN wake-ups count here",
    )
    rates = Result("jobs/s, 4 workers", "jobs/s")
    for _ in range(bench.runs):
        with bench.database() as dsn:
            per_job, all_commits, rate = ours.job_cost(dsn, logs, 200, 4)
        writes.samples.append(per_job)
        commits.samples.append(all_commits)
        rates.samples.append(rate)
    for result in (writes, commits, rates):
        print(result.row(), flush=True)


def run_scaling(bench: Bench, logs: Path, latency: int = 200) -> None:
    print(f"\n## 4. scaling: offline provider, {latency} ms per call and per chunk (jobs/min)")
    base = None
    for workers in (1, 2, 4, 8, 16):
        r = repeat(
            bench,
            Result(f"{workers} worker(s), {3 * workers} jobs", "jobs/min"),
            lambda dsn, w=workers: ours.throughput(dsn, logs, w, 3 * w, latency),
            max(1, bench.runs - 1),
        )
        base = base or r.median
        print(
            f"{'  efficiency against linear':<58} {r.median / (base * workers):>12.0%}", flush=True
        )


def run_memory(bench: Bench, logs: Path) -> None:
    print("\n## 5. memory: RSS and PSS from /proc/PID/smaps_rollup (MB)")
    for workers in (4, 16):
        with bench.database() as dsn:
            found = ours.memory(dsn, logs, workers)
        for role, values in found.items():
            rss = statistics.median(v[0] for v in values) / 2**20
            pss = statistics.median(v[1] for v in values) / 2**20
            print(
                f"{workers:>2} workers, {role:<44} RSS {rss:6.1f}  PSS {pss:6.1f}"
                + (
                    "   (target: worker PSS < 20)"
                    if "worker" in role and "health" not in role
                    else ""
                )
            )
    sys.stdout.flush()


def run_ttft(bench: Bench, logs: Path, latency: int = 100) -> None:
    print(f"\n## 6. time to first text: offline provider at {latency} ms per call and chunk (ms)")
    provider_floor = ttft_floor(latency)
    r = repeat(
        bench,
        Result("INSERT commit -> first text in chapters.content", "ms"),
        lambda dsn: [x * 1000 for x in ours.time_to_first_text(dsn, logs, 5, latency)],
    )
    print(f"{'provider alone: outline call + first chunk':<58} {provider_floor * 1000:>12.0f} ms")
    print(
        f"{'overhead beyond the provider':<58} {r.median - provider_floor * 1000:>12.0f} ms"
        f"       {'':>17}  target: <= 100"
    )


def ttft_floor(latency: int) -> float:
    """What the offline provider alone needs for the outline and the first chunk."""
    from generation.providers.offline import OfflineProvider
    from generation.story.preferences import parse_preferences
    from generation.types import ChapterRequest

    provider = OfflineProvider(latency_ms=latency)
    request = ChapterRequest(1, parse_preferences({"bullet_count": 2, "words_per_bullet": 60}))
    started = time.monotonic()
    outline = provider.outline(request)
    next(iter(provider.stream_section(request, outline, 0, "")))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--wal-level",
        choices=("replica", "logical"),
        help="restart the throwaway server with this wal_level (Supabase runs logical)",
    )
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="storyworker-bench-"))
    with throwaway_server() as server:
        if args.wal_level:
            if not server.restartable:
                parser.error("--wal-level needs the throwaway server (DATABASE_URL is set)")
            server.start([*server.stop(), "-c", f"wal_level={args.wal_level}"])
        server.build_template()
        bench = Bench(server, args.runs)
        header(bench)
        steps = {
            "pickup": lambda: run_pickup(bench, logs),
            "overhead": lambda: run_overhead(bench),
            "jobcost": lambda: run_jobcost(bench, logs),
            "scaling": lambda: run_scaling(bench, logs),
            "memory": lambda: run_memory(bench, logs),
            "ttft": lambda: run_ttft(bench, logs),
            "pooler": lambda: pooled.run(bench, logs),
            "livetext": lambda: livetext.run(bench, logs),
            "dashboard": lambda: dashboard.run(bench),
            "story": lambda: story.run(bench),
            "order": lambda: order.run(bench, logs),
        }
        for name in args.only:
            steps[name]()
    print(f"\n(service logs: {logs})")


if __name__ == "__main__":
    main()
