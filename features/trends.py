"""Trends of the quality scan (the seed's 行为偏好趋势 and 兴趣标签热度 over time).

Each worker keeps a bounded in-memory history of its scans: a point per scan, at most one per
`step` seconds (a later scan in the same step replaces the point), the last `span` seconds. A
cluster view merges several workers' histories exactly with `merge_latest`: at each step, the
sums and counts of every worker's latest scan at or before it (never averages of averages).
Pure; streams.monitoring.monitor records the scans, streams.web.dashboard_data merges what
members send.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import reduce
from typing import Any, Callable, Sequence, TypeVar

from features.quality import QualitySummary

T = TypeVar("T")


@dataclass(frozen=True)
class TrendPoint:
    t: float                    # when the scan ended (epoch seconds)
    summary: QualitySummary


def trend_step(span_seconds: float, max_points: int, scan_interval: float) -> float:
    """Seconds between points: one per scan, or wider when a scan per point would keep more
    than `max_points` over the span."""
    return max(scan_interval, span_seconds / max_points)


class TrendHistory:
    """One worker's scans over the last `span_seconds`, at most `max_points` of them."""

    def __init__(self, span_seconds: float, max_points: int, scan_interval: float):
        self.span = span_seconds
        self.step = trend_step(span_seconds, max_points, scan_interval)
        self.points: deque[TrendPoint] = deque(maxlen=max_points)

    def add(self, t: float, summary: QualitySummary) -> None:
        point = TrendPoint(t, summary)
        if self.points and self.points[-1].t // self.step == t // self.step:
            self.points[-1] = point
        else:
            self.points.append(point)
        while self.points[0].t < t - self.span:
            self.points.popleft()

    def since(self, t: float | None) -> list[TrendPoint]:
        """The points after `t`, and the last one at or before it (a merge carries a worker's
        latest point forward, so it needs the one before the window too)."""
        if t is None:
            return list(self.points)
        out: list[TrendPoint] = []
        for p in self.points:
            if p.t <= t:
                out[:] = [p]
            else:
                out.append(p)
        return out

    def to_dict(self, since: float | None = None) -> dict[str, Any]:
        return {"step": self.step, "span_seconds": self.span,
                "points": [{"t": p.t, **p.summary.sums()} for p in self.since(since)]}


def points_from_dict(d: dict[str, Any]) -> list[TrendPoint]:
    """The points of a `TrendHistory.to_dict` (another worker's answer)."""
    return [TrendPoint(float(p["t"]), QualitySummary.from_dict(p)) for p in d["points"]]


def merge_latest(series: Sequence[Sequence[tuple[float, T]]], step: float,
                 combine: Callable[[list[T]], T], after: float | None = None
                 ) -> list[tuple[float, T]]:
    """Several workers' time series (each sorted by time) on one grid of `step` seconds: for
    each step in which any worker has a point, `combine` of every worker's latest point at or
    before the end of that step, timed at the step's start. Steps starting at or before
    `after` are left out (with each worker's last point at or before `after` given, the steps
    after it are exactly those of the whole series)."""
    buckets = sorted({int(t // step) for s in series for t, _ in s})
    latest: list[T | None] = [None] * len(series)
    nxt = [0] * len(series)
    out: list[tuple[float, T]] = []
    for b in buckets:
        for i, s in enumerate(series):
            while nxt[i] < len(s) and int(s[nxt[i]][0] // step) <= b:
                latest[i] = s[nxt[i]][1]
                nxt[i] += 1
        t = b * step
        if after is None or t > after:
            out.append((t, combine([x for x in latest if x is not None])))
    return out


def merge_summaries(parts: list[QualitySummary]) -> QualitySummary:
    return reduce(QualitySummary.merge, parts, QualitySummary())


def merge_histories(histories: Sequence[Sequence[TrendPoint]], step: float,
                    after: float | None = None) -> list[TrendPoint]:
    """Workers' trend points merged exactly (`merge_latest` of their quality summaries)."""
    merged = merge_latest([[(p.t, p.summary) for p in h] for h in histories], step,
                          merge_summaries, after)
    return [TrendPoint(t, s) for t, s in merged]
