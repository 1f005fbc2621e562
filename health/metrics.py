"""Prometheus metrics for a pre-fork service.

Per-worker gauges come straight from the heartbeat table at scrape time; queue depth
from a callable the supervisor provides (cached, so scrapes don't load the database);
counters and histograms that workers record come through prometheus_client's
multiprocess mode.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from health.breaker import Breaker
from health.heartbeat import HeartbeatTable, WorkerSnapshot, WorkerState
from health.stats import QueueStats

log = logging.getLogger(__name__)


class HeartbeatCollector(Collector):
    """Collects at scrape time: per-worker and supervisor gauges from the heartbeat
    table, and queue metrics from `queue_stats` (called at most once per
    `cache_seconds`; when it raises, storyworker_queue_stats_up is 0 and the queue
    metrics are left out). Without `queue_stats` there are no queue metrics at all."""

    def __init__(
        self,
        table: HeartbeatTable,
        queue_stats: Callable[[], QueueStats] | None = None,
        cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        breaker: Breaker | None = None,
    ) -> None:
        self._table = table
        self._breaker = breaker
        self._queue_stats = queue_stats
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, QueueStats | None] | None = None

    def collect(self) -> Iterator[Metric]:
        now = self._clock()
        yield from self._supervisor(now)
        yield from self._workers(now)
        yield from self._queue()
        if self._breaker is not None:
            yield GaugeMetricFamily(
                "storyworker_provider_paused",
                "1 while the provider is at fault and the workers are paused.",
                value=int(self._breaker.state().open),
            )

    def _supervisor(self, now: float) -> Iterator[Metric]:
        sup = self._table.supervisor()
        yield GaugeMetricFamily(
            "storyworker_supervisor_heartbeat_age_seconds",
            "Seconds since the supervisor's last heartbeat.",
            value=sup.age(now),
        )
        yield GaugeMetricFamily(
            "storyworker_workers_expected",
            "Workers the supervisor runs.",
            value=sup.expected_workers,
        )

    def _workers(self, now: float) -> Iterator[Metric]:
        worker = ["worker"]
        age = GaugeMetricFamily(
            "storyworker_worker_heartbeat_age_seconds",
            "Seconds since each worker's last heartbeat.",
            labels=worker,
        )
        state = GaugeMetricFamily(
            "storyworker_worker_state",
            "1 for each worker's current state.",
            labels=[*worker, "state"],
        )
        rss = GaugeMetricFamily(
            "storyworker_worker_resident_memory_bytes",
            "Resident memory of each worker.",
            labels=worker,
        )
        workers = self._table.workers()
        for w in workers:
            label = str(w.index)
            if w.heartbeat:  # 0.0: the slot has never beaten, so it has no age
                age.add_metric([label], w.age(now))
            for s in WorkerState:
                state.add_metric([label, s.label], 1.0 if w.state == s else 0.0)
            rss.add_metric([label], w.rss_bytes)
        yield from (age, state, rss)
        yield from self._counters(workers)

    @staticmethod
    def _counters(workers: list[WorkerSnapshot]) -> Iterator[Metric]:
        # Counters: reset_slot keeps them across restarts, so each slot's only grow.
        worker = ["worker"]
        restarts = CounterMetricFamily(
            "storyworker_worker_restarts", "Times each worker slot was respawned.", labels=worker
        )
        jobs = CounterMetricFamily(
            "storyworker_worker_jobs", "Jobs each worker slot settled.", labels=[*worker, "outcome"]
        )
        warnings = CounterMetricFamily(
            "storyworker_live_text_send_warnings",
            "Warnings realtime.send raised while each worker slot sent live text"
            " (LIVE_TEXT=broadcast; it swallows its own errors as warnings).",
            labels=worker,
        )
        for w in workers:
            label = str(w.index)
            restarts.add_metric([label], w.restarts)
            jobs.add_metric([label, "completed"], w.jobs_completed)
            jobs.add_metric([label, "failed"], w.jobs_failed)
            warnings.add_metric([label], w.live_warnings)
        yield from (restarts, jobs, warnings)

    def _queue(self) -> Iterator[Metric]:
        if self._queue_stats is None:
            return
        stats = self._stats()
        yield GaugeMetricFamily(
            "storyworker_queue_stats_up",
            "1 when the queue statistics could be read.",
            value=int(stats is not None),
        )
        if stats is None:
            return
        depth = GaugeMetricFamily(
            "storyworker_queue_jobs", "Jobs in the queue by status.", labels=["status"]
        )
        for status, count in sorted(stats.depth_by_status.items()):
            depth.add_metric([status], count)
        yield depth
        if stats.oldest_runnable_age_seconds is not None:
            yield GaugeMetricFamily(
                "storyworker_queue_oldest_runnable_age_seconds",
                "Age of the oldest job that could run now.",
                value=stats.oldest_runnable_age_seconds,
            )

    def _stats(self) -> QueueStats | None:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached[0] >= self._cache_seconds:
                try:
                    value: QueueStats | None = self._queue_stats()  # type: ignore[misc]
                except Exception as exc:  # noqa: BLE001 - exported as storyworker_queue_stats_up 0
                    if self._cached is None or self._cached[1] is not None:
                        # Once per outage; the class name only, as messages may quote a DSN.
                        log.warning("queue statistics unavailable: %s", type(exc).__name__)
                    value = None
                self._cached = (now, value)
            return self._cached[1]


def build_registry(collector: Collector, multiprocess_dir: str | None = None) -> CollectorRegistry:
    """A registry with `collector`, plus the workers' samples from `multiprocess_dir`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if multiprocess_dir:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
    return registry
