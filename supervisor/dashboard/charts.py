"""Charts drawn on the server as inline SVG: the geometry is computed here, the
template draws it (escaped like everything else). No JavaScript library."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

WIDTH, HEIGHT = 600, 120
#: Room at the bottom (the time labels are HTML under the chart: SVG text would be
#: stretched with it).
AXIS = 0


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    #: A CSS class: what the bar stands for ("ok", "bad", "p50", "p95").
    kind: str
    #: The tooltip.
    title: str


@dataclass(frozen=True)
class Chart:
    title: str
    #: What the top of the chart stands for ("42 jobs").
    scale: str
    bars: list[Bar] = field(default_factory=list)
    #: (x, text) under the bars, evenly spaced.
    ticks: list[tuple[float, str]] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT


def ago(seconds: float) -> str:
    """`-45m`, `-3h`, `now`: a bucket's start relative to now."""
    if seconds <= 0:
        return "now"
    if seconds < 3600:
        return f"-{round(seconds / 60)}m"
    return f"-{round(seconds / 3600)}h"


def _ticks(buckets: int, step: int, slot: float) -> list[tuple[float, str]]:
    every = max(1, buckets // 6)
    ticks = [(i * slot, ago((buckets - i) * step)) for i in range(0, buckets, every)]
    return [*ticks, (buckets * slot, "now")]


def throughput(title: str, completed: Sequence[int], failed: Sequence[int], step: int) -> Chart:
    """Jobs ended per bucket, completed stacked under failed."""
    buckets = len(completed)
    top = max([c + f for c, f in zip(completed, failed, strict=True)] + [1])
    slot, room = WIDTH / max(buckets, 1), HEIGHT - AXIS
    bars = []
    for i, (ok, bad) in enumerate(zip(completed, failed, strict=True)):
        label = f"{ago((buckets - i) * step)}: {ok} completed, {bad} failed"
        ok_h, bad_h = room * ok / top, room * bad / top
        x, w = i * slot + 1, max(slot - 2, 1)
        if ok:
            bars.append(Bar(x, room - ok_h, w, ok_h, "ok", label))
        if bad:
            bars.append(Bar(x, room - ok_h - bad_h, w, bad_h, "bad", label))
    return Chart(
        title,
        f"{top:,} jobs",
        bars,
        _ticks(buckets, step, slot),
        [("ok", "completed"), ("bad", "failed")],
    )


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


def latency(
    title: str, p50: Sequence[float | None], p95: Sequence[float | None], step: int
) -> Chart:
    """Queue latency per bucket: the median as a bar, the 95th percentile as a thin
    bar above it."""
    buckets = len(p50)
    top = max([v for v in (*p50, *p95) if v is not None] + [0.001])
    slot, room = WIDTH / max(buckets, 1), HEIGHT - AXIS
    bars = []
    for i, (mid, high) in enumerate(zip(p50, p95, strict=True)):
        if mid is None or high is None:
            continue
        label = f"{ago((buckets - i) * step)}: median {seconds(mid)}, p95 {seconds(high)}"
        x, w = i * slot + 1, max(slot - 2, 1)
        bars.append(Bar(x, room - room * high / top, w, 2, "p95", label))
        bars.append(Bar(x, room - room * mid / top, w, room * mid / top, "p50", label))
    return Chart(
        title,
        seconds(top),
        bars,
        _ticks(buckets, step, slot),
        [("p50", "median"), ("p95", "95th percentile")],
    )
