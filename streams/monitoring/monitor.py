"""Monitoring of one worker: Prometheus metrics, rates and lag, the quality/business scan, and
alert evaluation (alerts go to `profile-alerts`, the log and an optional webhook).

Lag is the fetch high watermark minus the next offset the pipeline will process, per
partition. Counters come straight from the pipeline's counts.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, cast

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from features import columnar
from features.alerts import AlertEvaluator
from features.encoding import StateDecodeError
from features.quality import QUALITY_METRICS, BusinessKeys, QualitySummary
from features.trends import TrendHistory
from streams.monitoring.counters import EVENT_TRIGGER, WorkerCounts
from streams.state import PartitionStore
from streams.state.owned_chunks import OwnedChunks, SampleOfUsers

if TYPE_CHECKING:
    from streams.pipeline.views import MonitoredPipeline

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
                   0.75, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400, 30 * 86400)
# Every metric family /metrics exposes (the Grafana dashboard and the tests use these names).
METRIC_NAMES = (
    "profiles_events_in", "profiles_events_applied", "profiles_events_duplicate",
    "profiles_events_redelivered", "profiles_events_partition_mismatch",
    "profiles_events_partition_unexplained", "profiles_aggregates_published",
    "profiles_publishes_held", "profiles_held_flushed", "profiles_held_users",
    "profiles_held_oldest_age_seconds", "profiles_dead_letters",
    "profiles_published", "profiles_publish_latency_seconds", "profiles_consumer_lag",
    "profiles_events_per_second", "profiles_publish_rate", "profiles_dlq_rate",
    "profiles_state_bytes", "profiles_alerts_firing", "profiles_quality",
    "profiles_quality_numerator", "profiles_quality_sample_users",
    "profiles_activity_level_users",
    "profiles_user_type_users", "profiles_interest_tag_users", "profiles_preference_users",
    "process_resident_memory_bytes",
)
SAMPLE_INTERVAL = 2.0       # seconds between samples of counters and lag (rates, dashboard)
SERIES_POINTS = 300         # samples kept for the dashboard (10 minutes)
QUALITY_CHUNK = 200         # users evaluated per hold of the pipeline lock
COUNTERS = {               # WorkerCounts field -> (metric name, help)
    "events_in": ("profiles_events_in", "Events read from user-events"),
    "applied": ("profiles_events_applied", "Events applied to a user's state"),
    "duplicates": ("profiles_events_duplicate", "Events skipped as duplicates (event_id)"),
    "redelivered": ("profiles_events_redelivered", "Events skipped as redelivered (offset)"),
    "aggregates": ("profiles_aggregates_published", "Closed-day aggregates published"),
    "held": ("profiles_publishes_held", "Users held back at a commit, their events within "
             "real_time_update.update_interval of their last publish"),
    "held_flushed": ("profiles_held_flushed", "Held profiles published once their interval "
                     "passed"),
    "partition_mismatch": ("profiles_events_partition_mismatch", "Events that arrived on a "
                           "partition kafka.partitioner does not give for their key"),
    "partition_unexplained": ("profiles_events_partition_unexplained", "Events that arrived on "
                              "a partition no known partitioner gives for their key (the "
                              "producer ignores keys: a user's events are spread over "
                              "partitions)"),
}


def _missing_key(c: WorkerCounts) -> int:
    return c.dead_letters["missing_key"]


def _partition_mismatch(c: WorkerCounts) -> int:
    return c.partition_mismatch


# Counts whose increase over the rate window is an alert signal (features.config.SIGNALS).
WINDOW_COUNTS: dict[str, Callable[[WorkerCounts], int]] = {
    "partition_mismatch_events": _partition_mismatch, "missing_key_events": _missing_key}


class WorkerMonitor:
    def __init__(self, pipeline: MonitoredPipeline, jobs: Any, instance_id: int):
        self.pl = pipeline
        self.jobs = jobs
        self.app = pipeline.app
        self.cfg = pipeline.cfg.monitoring
        self.instance = instance_id
        self.chunks = OwnedChunks(pipeline.group, pipeline.states, pipeline.read_lock)
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)      # process_resident_memory_bytes, CPU
        self.registry.register(_Collector(self))
        self.latency = Histogram(
            "profiles_publish_latency_seconds",
            "Seconds from an event to the publish of the profile it changed, by clock: event "
            "(the event's timestamp) or ingest (its Kafka record timestamp)",
            ["clock"], buckets=LATENCY_BUCKETS, registry=self.registry)
        # The broker's (and network's) share of the ingest latency; the rest is the worker's
        # (waiting in the feed, compute, delivery of the batch's outputs).
        self.fetch_delay = Histogram(
            "profiles_fetch_delay_seconds",
            "Seconds from an event's Kafka record timestamp to its arrival in this worker "
            "(one record in 16 of each partition's share of a fetch, its first included)",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        pipeline.feed.on_arrival = self.fetch_delay.observe
        self.recent_latency: dict[str, deque] = {"event": deque(maxlen=5000),
                                                 "ingest": deque(maxlen=5000)}
        self.series: deque = deque(maxlen=SERIES_POINTS)
        # (t, events_in, dlq, published, {WINDOW_COUNTS}) over the window; all zero at start
        self.samples: deque = deque([(time.time(), 0, 0, 0, dict.fromkeys(WINDOW_COUNTS, 0))])
        self.lag: dict[int, int | None] = {}
        self.state_bytes = 0
        self.quality = QualitySummary()
        self.quality_at: float | None = None
        self.coverage_history: deque = deque()   # (t, coverage) over the last hour
        self.trend = TrendHistory(self.cfg.trend_hours * 3600, self.cfg.trend_points,
                                  self.cfg.quality_interval_seconds)
        self.business_keys = BusinessKeys.of(pipeline.cfg)
        self.last_event_at: float | None = None
        self._last_events_in = 0
        self.alerts = AlertEvaluator(self.cfg.alerts, f"worker-{self.instance}")
        self.alerts_sent = 0
        pipeline.on_publish = self.observe_publish
        if self.cfg.enabled:
            self.app.task(self._sample_forever)
            self.app.task(self._quality_forever)
            self.app.task(self._alerts_forever)

    # ------------------------------------------------------------------ inputs

    def observe_publish(self, profile, trigger: str, ingest_ts: float | None) -> None:
        if trigger != EVENT_TRIGGER:
            return                      # scheduled runs are not event latency
        now = time.time()
        for clock, t in (("event", profile.as_of), ("ingest", ingest_ts)):
            if t is not None:
                lat = max(0.0, now - t)
                self.latency.labels(clock).observe(lat)
                self.recent_latency[clock].append(lat)

    def dlq_total(self) -> int:
        return self.pl.counts.dead_lettered()

    def published_total(self) -> int:
        return self.pl.counts.published_total()

    def owned(self) -> list[int]:
        return self.pl.group.owned()

    def read_lag(self) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        for p in self.owned():
            hw = self.pl.group.highwater(p)
            if hw is None or self.pl.states.open_store(p) is None:
                out[p] = None
            else:
                out[p] = max(0, hw - (self.pl.clock(p).offset + 1))
        return out

    # ------------------------------------------------------------------ derived figures

    def rates(self) -> dict[str, float]:
        """Per-second rates and the DLQ share over monitoring.rate_window_seconds."""
        if len(self.samples) < 2:
            return {"events_per_second": 0.0, "publishes_per_second": 0.0, "dlq_rate": 0.0}
        t0, e0, d0, p0, _ = self.samples[0]
        t1, e1, d1, p1, _ = self.samples[-1]
        dt = max(t1 - t0, 1e-9)
        return {"events_per_second": (e1 - e0) / dt, "publishes_per_second": (p1 - p0) / dt,
                "dlq_rate": (d1 - d0) / (e1 - e0) if e1 > e0 else 0.0}

    def window_counts(self) -> dict[str, int]:
        """How much each WINDOW_COUNTS count grew over the rate window (up to now)."""
        base = self.samples[0][4]
        counts = self.pl.counts
        return {name: read(counts) - base[name] for name, read in WINDOW_COUNTS.items()}

    def percentiles(self, clock: str) -> dict[str, float | None]:
        xs = sorted(self.recent_latency[clock])
        if not xs:
            return {"p50": None, "p99": None}
        return {"p50": xs[len(xs) // 2], "p99": xs[min(len(xs) - 1, int(len(xs) * 0.99))]}

    def signals(self) -> dict[str, float | None]:
        q = self.quality.quality()
        lag = [v for v in self.lag.values() if v is not None]
        cov = [c for _, c in self.coverage_history]
        return {**self.rates(), **self.window_counts(),
                "lag": float(sum(lag)) if lag else None,
                "freshness_seconds": q["freshness_seconds"],
                "coverage": q["coverage"],
                "coverage_drop": (max(cov) - cov[-1]) if cov else None,
                "last_event_age_seconds": (time.time() - self.last_event_at)
                if self.last_event_at else None}

    def snapshot(self) -> dict:
        """Everything `profiles status` and the dashboard show, for this worker."""
        return {"instance": self.instance, "at": time.time(), "partitions": self.owned(),
                "lag": {str(p): v for p, v in sorted(self.lag.items())},
                "rates": self.rates(), "counts": self.pl.counts.to_dict(),
                "held": self.pl.held_figures(),
                "latency": {c: self.percentiles(c) for c in self.recent_latency},
                "state_bytes": self.state_bytes,
                "quality_scan": {"at": self.quality_at, **self.quality.to_dict()},
                "alerts": self.alerts.active(), "signals": self.signals(),
                "jobs": {"running": self.jobs.running if self.jobs else None}}

    # ------------------------------------------------------------------ background tasks

    async def _sample_forever(self) -> None:
        window = self.cfg.rate_window_seconds
        n = 0
        while not self.app.should_stop:
            await asyncio.sleep(SAMPLE_INTERVAL)
            now = time.time()
            events_in = self.pl.counts.events_in
            if events_in != self._last_events_in:
                self.last_event_at, self._last_events_in = now, events_in
            self.samples.append((now, events_in, self.dlq_total(), self.published_total(),
                                 {name: read(self.pl.counts)
                                  for name, read in WINDOW_COUNTS.items()}))
            while len(self.samples) > 2 and now - self.samples[0][0] > window:
                self.samples.popleft()
            self.lag = self.read_lag()
            if n % 15 == 0:
                self.state_bytes = await asyncio.to_thread(_dir_bytes, self.pl.states)
            n += 1
            r = self.rates()
            lag = [v for v in self.lag.values() if v is not None]
            pct = self.percentiles("ingest")
            self.series.append({"t": now, "events_per_second": r["events_per_second"],
                                "publishes_per_second": r["publishes_per_second"],
                                "lag": sum(lag), "p50": pct["p50"], "p99": pct["p99"]})

    async def _quality_forever(self) -> None:
        await asyncio.sleep(SAMPLE_INTERVAL)
        while not self.app.should_stop:
            try:
                await self.scan_quality()
            except Exception:
                log.exception("quality scan failed")
            await asyncio.sleep(self.cfg.quality_interval_seconds)

    async def scan_quality(self) -> QualitySummary:
        """Evaluate a sample of this worker's users (from a random key of each partition on),
        a chunk at a time under the pipeline lock (streams.state.owned_chunks)."""
        summary = QualitySummary()
        group = self.pl.group
        if not group.ready() or group.rebalancing:
            return self.quality
        owned = self.owned()        # none: an empty sample (the users are another worker's)
        per = max(1, self.cfg.quality_sample_users // max(1, len(owned)))
        engine, tz = self.pl.rt.engine, self.pl.tz
        for p in owned:
            async def add(db: PartitionStore, chunk: list[tuple[bytes, bytes]], p: int = p) -> None:
                stream_time = self.pl.clock(p).stream_time
                uids, states = [], []
                for key, blob in chunk:
                    try:
                        st = columnar.decode(blob, tz)
                    except StateDecodeError:
                        continue
                    if not st.empty:
                        uids.append(int(key))
                        states.append(st)
                for prof, st in zip(_evaluate_readable(engine, uids, states), states):
                    if prof is not None:
                        summary.add(prof, max(stream_time, st.T), st.published_as_of)
            await self.chunks.each(p, SampleOfUsers(per, QUALITY_CHUNK), add)
        self.record_scan(summary, time.time())
        return summary

    def record_scan(self, summary: QualitySummary, now: float) -> None:
        """The scan becomes the current figures, a point of the trend history and of the
        hour of coverage the coverage_drop signal reads."""
        self.quality, self.quality_at = summary, now
        self.trend.add(now, summary)
        cov = summary.quality()["coverage"]
        if cov is not None:
            self.coverage_history.append((now, cov))
            while now - self.coverage_history[0][0] > 3600:
                self.coverage_history.popleft()

    async def _alerts_forever(self) -> None:
        while not self.app.should_stop:
            await asyncio.sleep(self.cfg.alert_interval_seconds)
            try:
                for rec in self.alerts.evaluate(self.signals(), time.time()):
                    await self.send_alert(rec)
            except Exception:
                log.exception("alert evaluation failed")

    async def send_alert(self, rec: dict) -> None:
        level = logging.WARNING if rec["state"] == "firing" else logging.INFO
        log.log(level, "alert %s %s: %s %s %s (value %s)", rec["alert"], rec["state"],
                rec["metric"], rec["op"], rec["threshold"], rec["value"])
        topic = self.pl.cfg.kafka.topics.alerts
        await self.pl.alerts_publisher.send(topic, rec["alert"].encode(), orjson.dumps(rec))
        await self.pl.alerts_publisher.flush()
        self.alerts_sent += 1
        if self.cfg.webhook_url:
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                    async with s.post(self.cfg.webhook_url, json=rec) as r:
                        if r.status >= 300:
                            log.warning("alert webhook answered HTTP %s", r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                log.warning("alert webhook failed: %s", e)


def _evaluate_readable(engine: Any, uids: list[int], states: list[Any]) -> list[Any]:
    """The users' profiles as of their last publish, in one call (with the metrics the
    quality figures read); a chunk holding a record whose day groups do not add up is
    evaluated user by user, that user's profile None."""
    as_of = [max(st.T, st.published_as_of) for st in states]
    try:
        return columnar.evaluate_many(engine, uids, states, as_of)
    except StateDecodeError:
        out: list[Any] = []              # a Profile, or None, per user
        for uid, st, t in zip(uids, states, as_of):
            try:
                out.extend(columnar.evaluate_many(engine, [uid], [st], [t]))
            except StateDecodeError:
                out.append(None)
        return out


def _dir_bytes(table) -> int:
    try:
        root = table.partition_path(0).parent
        return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    except OSError:
        return 0


class _Collector:
    """Exposes the pipeline's counts, lag, state size, quality and business figures."""

    def __init__(self, mon: WorkerMonitor):
        self.mon = mon

    def describe(self):
        return []

    def collect(self):
        mon, counts = self.mon, self.mon.pl.counts
        for key, (name, doc) in COUNTERS.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], getattr(counts, key))
            yield c
        dlq = CounterMetricFamily("profiles_dead_letters", "Events sent to the DLQ, by reason",
                                  labels=["reason"])
        for reason, n in sorted(counts.dead_letters.items()):
            if n:
                dlq.add_metric([reason], n)
        yield dlq
        pub = CounterMetricFamily("profiles_published", "Profile records published, by trigger",
                                  labels=["trigger"])
        pub.add_metric([EVENT_TRIGGER], counts.published[EVENT_TRIGGER])
        for trigger, n in sorted(counts.published.items()):
            if trigger != EVENT_TRIGGER and n:
                pub.add_metric([trigger], n)
        yield pub
        lag = GaugeMetricFamily("profiles_consumer_lag", "Records of user-events not yet "
                                "processed (fetch high watermark - next offset)",
                                labels=["partition"])
        for p, v in sorted(mon.lag.items()):
            if v is not None:
                lag.add_metric([str(p)], v)
        yield lag
        r = mon.rates()
        held = mon.pl.held_figures()
        for name, doc, v in (
                ("profiles_events_per_second", "Events read per second (rate window)",
                 r["events_per_second"]),
                ("profiles_publish_rate", "Profile records published per second (rate window)",
                 r["publishes_per_second"]),
                ("profiles_dlq_rate", "Dead letters / events read (rate window)", r["dlq_rate"]),
                ("profiles_state_bytes", "Bytes of the RocksDB state on disk", mon.state_bytes),
                ("profiles_alerts_firing", "Alert rules firing", len(mon.alerts.active())),
                ("profiles_held_users", "Users whose changed profile is held back now",
                 held["held_users"]),
                ("profiles_held_oldest_age_seconds", "Seconds the user held longest has waited",
                 held["held_oldest_age_seconds"])):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], v)
            yield g
        yield from quality_families(mon.quality)
        yield from business_families(mon.quality, mon.business_keys)


def quality_families(q: QualitySummary):
    """The seed's five figures of the last scan, and their numerators: Σ numerator / Σ
    sample users over workers is the exact cluster figure (an average of the workers'
    figures is not, when their samples differ in size)."""
    figures = q.quality()
    qg = GaugeMetricFamily("profiles_quality", "Quality of a sample of this worker's "
                           "profiles (coverage, average_confidence, data_richness, "
                           "freshness_seconds, completeness)", labels=["metric"])
    for k in QUALITY_METRICS:
        if figures[k] is not None:
            qg.add_metric([k], cast(float, figures[k]))
    yield qg
    num = GaugeMetricFamily("profiles_quality_numerator", "profiles_quality times "
                            "profiles_quality_sample_users (the figure summed over the sampled "
                            "users): sum over workers, divide by the summed sample users",
                            labels=["metric"])
    for k, v in q.numerators().items():
        num.add_metric([k], v)
    yield num
    qs = GaugeMetricFamily("profiles_quality_sample_users", "Users in the quality sample")
    qs.add_metric([], q.users)
    yield qs


BUSINESS_FAMILIES = (       # distribution -> (metric, label, help)
    ("activity_levels", "profiles_activity_level_users", "level",
     "Sampled users by activity level (every configured level)"),
    ("user_types", "profiles_user_type_users", "type",
     "Sampled users by user type (every configured type)"),
    ("interest_tags", "profiles_interest_tag_users", "tag",
     "Sampled users by interest tag (every configured category)"),
    ("behavior_preferences", "profiles_preference_users", "preference",
     "Sampled users by behavior preference (every configured rule)"))


def business_families(q: QualitySummary, keys: BusinessKeys):
    """One gauge per configured level, type, tag and preference, 0 included: the label sets
    stay the same from scan to scan, so each is a steady time series in Prometheus."""
    dists = q.distributions(keys)
    for dist, name, label, doc in BUSINESS_FAMILIES:
        g = GaugeMetricFamily(name, doc, labels=[label])
        for k, v in dists[dist].items():
            g.add_metric([k], v)
        yield g
