"""`profiles bench` / `make bench`: side-by-side figures on one broker, in one run.

Throughput: (A) our pipeline, 1 and 2 workers with the config's batch size, and 1 worker with a
larger one; (B) naive Faust, one table update per event; (C) the read ceiling, aiokafka getmany
+ orjson.loads. All read the same pre-filled `user-events`, each with its own consumer group
(app id), timed from its first event to its last. Then two steady runs, events offered at a
fixed rate to one worker on topics of their own: a latency run (p50/p99 event-to-publish
latency, from the worker's histogram: the event's Kafka timestamp to the delivery of the profile
record) and a soak run (RSS over time). Both report the worker's and the broker's CPU. Plus the
batch path's events/s and the state's bytes per user. Prints a table and writes BENCHMARKS.md.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, cast

import numpy as np
import orjson
import yaml
from aiokafka import AIOKafkaConsumer

from deploy import broker as embedded
from deploy.broker.properties import JVM_OPTIONS
from deploy.clients import event_records, load_items, produce_events, produce_records
from deploy.worker_process import spawn, worker_argv
from deploy.workers import ready
from features.config import NO_SCHEDULED_RUNS, ProfileConfig, load_config
from features.encoding import encode
from features.runtime import FeatureRuntime
from offline.batch_io import BatchReport
from reference.batch import build_states, run_batch
from tools.bench import targets
from tools.bench.peers.rows import KSTREAMS, OURS, QUIX, PeerRows, run_peer_rows
from tools.bench.proc import cpu_seconds, peak_rss_mb, rss_mb
from tools.data.sample import SampleSpec, write_sample

ROOT = Path(__file__).resolve().parents[2]   # the checkout: workers run from it
SPARSE_USERS = 5000         # users of the sparse sample
SPARSE_BATCH = 1000         # the batch the "distinct users per batch" figure is taken over
SPARSE_NAIVE_EVENTS = 100_000   # naive Faust on the sparse sample: timed over these
# The steady runs' latency quantiles leave out their first seconds: the first publishes wait
# for connections and caches (p99 over a whole 60 s run at 5,000/s was up to 1.4 s, the
# steady state's per-second worst about 0.5 s); the whole run's p99 is reported beside them.
WARMUP_SECONDS = 10.0


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    peak_rss_mb: float | None = None
    cpu_seconds: float | None = None    # of the measured process(es) over the timed span
    broker_cpu: float | None = None     # the broker's CPU seconds per second over that span
    broker_rss_mb: float | None = None  # the broker's RSS at its end

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float | None:
        """CPU microseconds per event: comparable across runs on a shared machine, where
        events/s depend on what else runs."""
        return self.cpu_seconds / self.events * 1e6 if self.cpu_seconds and self.events else None


def _get_count(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/stats", timeout=2) as r:
            return json.loads(r.read())["counts"].get("events_in", 0)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class BrokerProbe:
    """The embedded broker's process, measured beside every row."""
    pid: int

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float | None:
        return rss_mb(self.pid)


def _timed_processes(name: str, cmds: list[tuple[list[str], str]], total: int, workdir: Path,
                     say: Callable[[str], None], broker: BrokerProbe,
                     timeout: float = 900) -> Result:
    """Start processes, time from the first event counted to `total` (summed over them)."""
    procs = []
    for i, (cmd, url) in enumerate(cmds):
        log_path = workdir / f"{name.replace(' ', '_')}-{i}.log"
        procs.append((spawn(cmd, log_path, cwd=ROOT), url))
    try:
        t0 = n0 = None
        deadline = time.monotonic() + timeout
        last_say = 0.0
        n = 0
        while time.monotonic() < deadline:
            counts = [_get_count(url) for _, url in procs]
            n = sum(c or 0 for c in counts)
            now = time.monotonic()
            if t0 is None and n > 0:
                t0, n0 = now, n
                cpu0 = sum(cpu_seconds(p.pid) for p, _ in procs)
                bcpu0 = broker.cpu()
            if n >= total:
                break
            if any(p.poll() is not None for p, _ in procs):
                raise RuntimeError(f"{name}: a process exited; see {workdir}")
            if now - last_say > 5:
                say(f"  {name}: {n:,} of {total:,}")
                last_say = now
            time.sleep(0.1)
        if n < total:
            raise RuntimeError(f"{name}: only {n:,} of {total:,} events in {timeout:.0f} s")
        seconds = time.monotonic() - cast(float, t0)      # set by the first count
        cpu = sum(cpu_seconds(p.pid) for p, _ in procs) - cpu0
        rss = max((peak_rss_mb(p.pid) or 0) for p, _ in procs)
        return Result(name, total - cast(int, n0), seconds, rss, cpu,
                      (broker.cpu() - bcpu0) / seconds, broker.rss_mb())
    finally:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


async def _read_ceiling(cfg: ProfileConfig, total: int, broker: BrokerProbe) -> Result:
    consumer = AIOKafkaConsumer(cfg.kafka.topics.user_events,
                                bootstrap_servers=cfg.kafka.bootstrap_servers,
                                group_id=f"bench-ceiling-{time.time_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        n = 0
        t0 = None
        while n < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10000)
            if t0 is None and batches:
                t0, cpu0, bcpu0 = time.monotonic(), time.process_time(), broker.cpu()
            for records in batches.values():
                for r in records:
                    try:
                        orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        pass
                    n += 1
        seconds = time.monotonic() - cast(float, t0)      # set by the first batch
        return Result("(C) read ceiling: aiokafka getmany + orjson", n, seconds, None,
                      time.process_time() - cpu0, (broker.cpu() - bcpu0) / seconds,
                      broker.rss_mb())
    finally:
        await consumer.stop()


def _config(base: dict, workdir: Path, app_id: str, web_port: int, **sections) -> Path:
    raw = json.loads(json.dumps(base))
    raw.setdefault("worker", {}).update({"app_id": app_id, "web_port": web_port,
                                         "data_dir": str(workdir / app_id),
                                         "log_level": "warn"})
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    p = workdir / f"{app_id}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def _own_topics(prefix: str) -> dict[str, str]:
    """Topic names of a run's own: PREFIX-user-events and so on."""
    return {key: f"{prefix}-{value}" for key, value in
            {"user_events": "user-events", "profile_updates": "profile-updates",
             "profile_aggregates": "profile-aggregates", "dlq": "user-events-dlq",
             "alerts": "profile-alerts"}.items()}


def _worker_cmds(cfg_path: Path, ports: list[int]) -> list[tuple[list[str], str]]:
    return [(worker_argv(cfg_path, i + 1, port), f"http://127.0.0.1:{port}")
            for i, port in enumerate(ports)]


@dataclass
class Steady:
    """A steady run: events offered at a fixed rate to one worker."""
    name: str
    rate: float
    seconds: float
    offered: int
    processed: int
    p50_ms: float | None
    p99_ms: float | None
    latency_count: int
    fetch_p50_ms: float | None             # of which: Kafka timestamp to arrival in the worker
    fetch_p99_ms: float | None
    rss_mb: list[tuple[float, float]]      # (seconds since start, RSS MiB)
    cache: dict
    offered_rate: float                    # what the producer achieved
    worker_cpu: float                      # the worker's CPU seconds per wall second
    broker_cpu: float                      # the same for the embedded broker
    broker_rss_mb: float                   # the broker's RSS at the end
    linger_ms: float                       # every producer's (kafka.client.linger_ms)
    p99_all_ms: float | None               # the p99 over the whole run, warm-up included
    warmup_s: float                        # the quantiles above leave out this first span
    rebalances: int                        # the worker's: above 1, the group expired it

    def rss_at(self, fraction: float) -> float:
        t_end = self.rss_mb[-1][0]
        return min(self.rss_mb, key=lambda p: abs(p[0] - fraction * t_end))[1]

    def rss_spread(self, after: float) -> tuple[float, float]:
        """Min and max RSS from `after` (a fraction of the run) to its end."""
        t_end = self.rss_mb[-1][0]
        later = [m for t, m in self.rss_mb if t >= after * t_end] or [self.rss_mb[-1][1]]
        return min(later), max(later)


def steady_records(events: Path, n: int) -> Iterator[tuple[bytes, bytes]]:
    """n (key, value) events: the sample's valid events over and over, each pass as new users
    (ids shifted) with new event ids, so state keeps growing as with a real user base."""
    sample = []
    for key, value in event_records(events):
        obj = orjson.loads(value) if key is not None else None
        if isinstance(obj, dict):
            sample.append(obj)
    shift = max(o["user_id"] for o in sample) + 1
    sent = 0
    for k in itertools.count():
        for o in sample:
            if sent >= n:
                return
            e = dict(o, user_id=o["user_id"] + k * shift)
            if "event_id" in o:
                e["event_id"] = f"{o['event_id']}-{k}"
            yield str(e["user_id"]).encode(), orjson.dumps(e)
            sent += 1


def _histogram_buckets(metrics_text: str, name: str,
                       want: dict[str, str]) -> list[tuple[float, float]]:
    from prometheus_client.parser import text_string_to_metric_families
    buckets = []
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name != name:
            continue
        for smp in fam.samples:
            if smp.name.endswith("_bucket") and all(smp.labels.get(k) == v
                                                    for k, v in want.items()):
                buckets.append((float(smp.labels["le"]), smp.value))
    return sorted(buckets)


def _histogram_quantiles(metrics_text: str, qs: tuple[float, ...],
                         name: str = "profiles_publish_latency_seconds",
                         labels: dict[str, str] | None = None, since: str | None = None
                         ) -> tuple[list[float | None], int]:
    """Quantiles of a histogram from /metrics (linear within a bucket); by default the
    ingest-clock publish latency. `since`: an earlier /metrics text, whose counts are taken
    off (the observations in between)."""
    want = {"clock": "ingest"} if labels is None else labels
    buckets = _histogram_buckets(metrics_text, name, want)
    if since is not None:
        before = dict(_histogram_buckets(since, name, want))
        buckets = [(le, n - before.get(le, 0.0)) for le, n in buckets]
    total = buckets[-1][1] if buckets else 0
    out: list[float | None] = []
    for q in qs:
        if not total:
            out.append(None)
            continue
        rank = q * total
        lo_b, lo_n = 0.0, 0.0
        for le, n in buckets:
            if n >= rank:
                if le == float("inf"):
                    out.append(lo_b)
                else:
                    out.append(lo_b + (le - lo_b) * (rank - lo_n) / max(n - lo_n, 1e-9))
                break
            lo_b, lo_n = le, n
    return out, int(total)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


def _steady_run(name: str, base: dict, workdir: Path, events: Path, rate: float, seconds: float,
                broker_pid: int, say: Callable[[str], None]) -> Steady:
    port = embedded.free_port()
    topics = _own_topics(name)
    cfg_path = _config(base, workdir, f"bench-{name}", port,
                       kafka={**base["kafka"], "topics": topics})
    cfg = load_config(cfg_path)
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / f"{name}-worker.log"
    (cmd, _), = _worker_cmds(cfg_path, [port])
    proc = spawn(cmd, log_path, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while ready(url) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} run: the worker did not start; see {log_path}")
            time.sleep(0.5)
        n = int(rate * seconds)
        say(f"  {name} run: {n:,} events offered at {rate:,.0f}/s to one worker "
            f"({seconds:,.0f} s)")
        done = threading.Event()
        result: dict = {}

        def produce():
            try:
                result["sent"], result["rate"] = asyncio.run(produce_records(
                    cfg, topics["user_events"], steady_records(events, n), rate, None, "steady"))
            finally:
                done.set()

        threading.Thread(target=produce, daemon=True).start()
        t0, cpu0, bcpu0 = time.monotonic(), cpu_seconds(proc.pid), cpu_seconds(broker_pid)
        rss: list[tuple[float, float]] = []
        last_say = t0
        warm: str | None = None
        while not done.wait(2.0):
            now = time.monotonic()
            if warm is None and now - t0 >= WARMUP_SECONDS:
                warm = _get(url + "/metrics").decode()
            rss.append((now - t0, rss_mb(proc.pid) or 0.0))
            if now - last_say >= 30:
                say(f"  {name} run: {now - t0:,.0f} s, RSS {rss[-1][1]:,.0f} MiB")
                last_say = now
        if "sent" not in result:
            raise RuntimeError(f"{name} run: the producer failed")
        wall = time.monotonic() - t0
        cpu = (cpu_seconds(proc.pid) - cpu0) / wall
        broker_cpu = (cpu_seconds(broker_pid) - bcpu0) / wall
        processed = 0
        drain_until = time.monotonic() + 60
        while time.monotonic() < drain_until:
            processed = _get_count(url) or 0
            if processed >= n:
                break
            time.sleep(0.5)
        rss.append((time.monotonic() - t0, rss_mb(proc.pid) or 0.0))
        metrics = _get(url + "/metrics").decode()
        (p50, p99), count = _histogram_quantiles(metrics, (0.5, 0.99), since=warm)
        (_, p99_all), _ = _histogram_quantiles(metrics, (0.5, 0.99))
        (f50, f99), _ = _histogram_quantiles(metrics, (0.5, 0.99),
                                             "profiles_fetch_delay_seconds", {}, since=warm)
        cache = json.loads(_get(url + "/stats")).get("state_cache", {})
        rebalances = int(json.loads(_get(url + "/health")).get("rebalances", 0))
        ms = 1000.0
        return Steady(name, rate, seconds, n, processed, p50 and p50 * ms, p99 and p99 * ms,
                      count, f50 and f50 * ms, f99 and f99 * ms, rss,
                      cache, result["rate"], cpu, broker_cpu, rss_mb(broker_pid) or 0.0,
                      cfg.kafka.client.linger_ms, p99_all and p99_all * ms,
                      WARMUP_SECONDS if warm is not None else 0.0, rebalances)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


STREAM_ROWS = ("bench", "sparse", "peers-large", "producers", "latency", "guarantees", "batch",
               "offline", "scale")   # row groups
LARGE_PEER_USERS = 25_000   # users of the large sparse sample (about 2M events)


def run_bench(workdir: Path, users: int, days: int, say: Callable[[str], None] = print,
              tuned_batch: int = 5000, latency_rate: float = 5000,
              latency_seconds: float = 60, soak_rate: float = 5000,
              soak_seconds: float = 600, high_latency_rate: float = 20000,
              sparse_users: int = SPARSE_USERS, large_peer_users: int = LARGE_PEER_USERS,
              rows: tuple[str, ...] = STREAM_ROWS) -> str:
    """Every row of `make bench`, or those of the groups in `rows`: "bench" (throughput on the
    bench sample), "sparse" (throughput on the sparse sample), "latency" (the steady runs),
    "producers" (CPU per record of the output producers), "guarantees" (at_least_once against
    exactly_once_v2 at several commit intervals: tools.bench.guarantees), "batch" (the batch
    path and the state sizes), "offline" (the offline engines), "scale" (the batch path, Spark
    and the scheduled runs at the scale of issue 25's targets: tools.bench.scale)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = embedded.free_port()
    # at_least_once, as the peers' rows run: the guarantees row sets exactly_once_v2 beside it
    base = {"kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": 8,
                      "processing_guarantee": "at_least_once"},
            "embedded_broker": {"port": port, "run_dir": str(workdir / "run")},
            "mapping_index": str(workdir / "mapping_index.json"),
            "scheduled_update": dict(NO_SCHEDULED_RUNS)}     # no run mid-measurement
    cfg_path = _config(base, workdir, "bench-pipeline-1", embedded.free_port())
    cfg = load_config(cfg_path)
    batch = cfg.real_time_update.batch_size
    say(f"sample data: {users:,} users, {days} days")
    info = write_sample(SampleSpec(users=users, days=days), workdir / "sample")
    items, events = workdir / "sample" / "item_feat_dict.json", workdir / "sample" / "events.jsonl"
    total = info["events"]
    results: list[Result] = []
    sparse: SparseRows | None = None
    steady: list[Steady] = []
    producers: list[str] = []
    startup: BrokerStartup | None = None
    large: PeerRows | None = None
    guarantee_rows: list = []
    if {"bench", "sparse", "peers-large", "producers", "latency", "guarantees"} & set(rows):
        t_start = time.monotonic()
        st, _ = embedded.start(cfg.run_dir, port)
        startup = BrokerStartup(time.monotonic() - t_start)
        say(f"embedded broker: Apache Kafka {st.version} answering {startup.first:.1f} s after "
            "`start` (a new cluster's storage included)")
        broker = BrokerProbe(cast(int, st.pid))        # a running broker's
        try:
            load_items(cfg, items, progress=None)
            if "bench" in rows:
                results = _bench_sample_rows(cfg, base, workdir, events, total, batch,
                                             tuned_batch, broker, say)
            if "sparse" in rows:
                sparse = run_sparse_rows(base, workdir, sparse_users, days, broker, say)
            if "peers-large" in rows:
                large = run_large_peer_rows(base, workdir, large_peer_users, days, broker, say)
            if "producers" in rows:
                producers = run_producer_rows(cfg, say)
            if "latency" in rows:
                steady = [_steady_run(name, base, workdir, events, rate, secs, broker.pid, say)
                          for name, rate, secs in (
                              ("latency", latency_rate, latency_seconds),
                              (f"latency-{high_latency_rate:.0f}", high_latency_rate,
                               latency_seconds),
                              ("soak", soak_rate, soak_seconds)) if secs > 0]
            if "guarantees" in rows:
                from tools.bench.guarantees import run_guarantee_rows
                guarantee_rows = run_guarantee_rows(
                    base, workdir, sparse_users, days, broker, say, latency_rate=latency_rate,
                    latency_seconds=min(latency_seconds, 40), events_for_latency=events)
            startup.data_mib = _tree_mib(st.data_dir)
            t_stop = time.monotonic()
            embedded.stop(cfg.run_dir)
            startup.stop = time.monotonic() - t_stop
            t_start = time.monotonic()
            embedded.start(cfg.run_dir, port)
            startup.restart = time.monotonic() - t_start
        finally:
            embedded.stop(cfg.run_dir)
    out = _report(results, sparse, steady, total, users, days, batch, startup)
    if large is not None:
        out += "\n" + "\n".join(large.lines()) + "\n"
    if results or sparse or large or steady:
        out += "\n" + "\n".join(_target_lines(results, sparse, large, steady, batch,
                                               high_latency_rate)) + "\n"
    if producers:
        out += "\n" + "\n".join(producers) + "\n"
    if guarantee_rows:
        from tools.bench.guarantees import guarantee_lines
        out += "\n" + "\n".join(["### at_least_once against exactly_once_v2 (issue 27)", "",
                                  *guarantee_lines(guarantee_rows, sparse_users,
                                                   latency_rate)]) + "\n"
    if "batch" in rows:
        out += "\n" + _batch_rows(cfg, items, events, workdir)
    if "offline" in rows:
        out += "\n" + run_offline_bench(workdir / "offline", cfg, items, events, say)
    if "scale" in rows:
        from tools.bench.scale import run_scale_rows
        scale = run_scale_rows(workdir / "scale", say)
        out += "\n" + "\n".join(["## Issue 25's offline and scheduled-run targets", "",
                                  *scale.lines(), "", *targets.table(scale.target_list())]) + "\n"
    return out


def _target_lines(results: list[Result], sparse: "SparseRows | None", large: PeerRows | None,
                  steady: list[Steady], batch: int, high_rate: float) -> list[str]:
    """The fast path's targets (issue 25) against this run."""
    def rate(rows: list[Result], prefix: str) -> float | None:
        return next((r.rate for r in rows if r.name.startswith(prefix)), None)

    def peer_ratio(rows: PeerRows | None, other: str) -> float | None:
        by = {r.name: r.rate for r in rows.runs} if rows else {}
        return targets.ratio(by.get(OURS), by.get(other))

    def p99(name: str) -> float | None:
        return next((r.p99_ms for r in steady if r.name == name), None)

    one = f"(A) our pipeline, 1 worker, batch_size {batch:,}"
    sp = sparse.results if sparse else []
    return ["Targets of the fast path (issue 25) against this run; those of the batch path, the "
            "scheduled runs and the Spark engine are in the section \"Issue 25's offline and "
            "scheduled-run targets\" below.", "",
            *targets.table(targets.stream_targets(
                sparse_vs_quix=peer_ratio(sparse.peers if sparse else None, QUIX),
                large_vs_kstreams=peer_ratio(large, KSTREAMS),
                sparse_vs_ceiling=targets.ratio(rate(sp, "(A)"), rate(sp, "(C)")),
                sparse_vs_naive=targets.ratio(rate(sp, "(A)"), rate(sp, "(B)")),
                bench_vs_naive=targets.ratio(rate(results, one), rate(results, "(B)")),
                p99_5k_ms=p99("latency"), p99_20k_ms=p99(f"latency-{high_rate:.0f}")))]


@dataclass
class BrokerStartup:
    first: float                # seconds from `start` to an answer, the storage format included
    stop: float | None = None   # a controlled shutdown at the end of the run
    restart: float | None = None    # `start` again on the run's log dirs, to an answer
    data_mib: float | None = None   # what the log dirs held then

    def line(self) -> str:
        out = (f"Embedded broker start-up: {self.first:.1f} s from `profiles broker start` to "
               "its first Metadata answer, a new cluster's storage included")
        if self.restart is not None:
            out += (f"; at the end of the run a controlled stop took {self.stop:.1f} s and a "
                    f"start again on its log dirs ({self.data_mib:,.0f} MiB) {self.restart:.1f} s")
        return out + "."


def _tree_mib(path: Path | None) -> float:
    if path is None:
        return 0.0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2 ** 20


def _bench_sample_rows(cfg: ProfileConfig, base: dict, workdir: Path, events: Path,
                       total: int, batch: int, tuned_batch: int, broker: BrokerProbe,
                       say: Callable[[str], None]) -> list[Result]:
    """(C), (B) and our pipeline (1 and 2 workers, and 1 at `tuned_batch`) on the bench
    sample, produced to `user-events`."""
    results: list[Result] = []
    n, _ = produce_events(cfg, events, progress=None)
    say(f"produced {n:,} events to user-events (8 partitions); measuring")
    results.append(asyncio.run(_read_ceiling(cfg, total, broker)))
    say(f"  {results[-1].name}: {results[-1].rate:,.0f}/s")
    p_naive = embedded.free_port()
    naive_cfg = _config(base, workdir, "bench-naive", p_naive)
    results.append(_timed_processes(
        "(B) naive Faust, one table update per event",
        [(["-m", "tools.bench.naive_faust", str(naive_cfg), str(p_naive)],
          f"http://127.0.0.1:{p_naive}")], total, workdir, say, broker))
    say(f"  {results[-1].name}: {results[-1].rate:,.0f}/s")
    runs = [(1, batch), (2, batch)] + ([(1, tuned_batch)] if tuned_batch != batch else [])
    for workers, size in runs:
        app_id = f"bench-pipeline-{workers}w-b{size}"
        ports = [embedded.free_port() for _ in range(workers)]
        wcfg = _config(base, workdir, app_id, ports[0],
                       real_time_update={"batch_size": size,
                                         "queue_size": max(10000, 2 * size)})
        name = f"(A) our pipeline, {workers} worker{'s' if workers > 1 else ''}, " \
               f"batch_size {size:,}"
        results.append(_timed_processes(name, _worker_cmds(wcfg, ports), total, workdir, say,
                                        broker))
        say(f"  {results[-1].name}: {results[-1].rate:,.0f}/s")
    return results


def _batch_rows(cfg: ProfileConfig, items: Path, events: Path, workdir: Path) -> str:
    """The batch path's events/s and the state's bytes per user, on the bench sample."""
    report = run_batch(cfg, items, events, workdir / "batch" / "profiles.jsonl",
                       progress_stream=None)
    rt = FeatureRuntime.from_config(cfg, items)
    with open(events, "rb") as f:
        states = build_states(rt, f, BatchReport())
    sizes = np.array([len(encode(s, rt.engine.tz)) for s in states.values() if not s.empty])
    n_ev = np.array([sum(b.total for b in s.days.values()) for s in states.values()
                     if not s.empty])
    typical = sizes[(n_ev >= 80) & (n_ev <= 120)]
    lines = [f"Batch path (`profiles batch`, JSONL file to profiles, bench sample): "
             f"{report.events_per_second:,.0f} events/s.", ""]
    lines.append(
        f"State bytes per user (encoded): median {np.median(sizes):,.0f}, p99 "
        f"{np.percentile(sizes, 99):,.0f}, max {sizes.max():,.0f}; users with 80-120 events in "
        f"30 days: median {np.median(typical):,.0f}" if len(typical) else
        f"State bytes per user (encoded): median {np.median(sizes):,.0f}")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dist = embedded.distribution()
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; broker: embedded Apache Kafka "
            f"{dist.version} (one KRaft node, JVM `{' '.join(JVM_OPTIONS)}`"
            f"{', with its class archive' if embedded.warm_start.archive_options(dist) else ''}"
            ") on the same machine")


def _report(results: list[Result], sparse: "SparseRows | None", steady: list[Steady],
            total: int, users: int, days: int, batch: int,
            startup: BrokerStartup | None = None) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"`make bench` on {time.strftime('%Y-%m-%d')}: {_machine()}; load average at the start "
        f"{_load()}.",
        f"Bench sample: {users:,} users, {days} days, {total:,} events; 8 partitions. "
        f"The config's `real_time_update.batch_size` is {batch:,}.",
        "",
    ]
    if startup is not None:
        lines += [startup.line(), ""]
    if results:
        lines += _throughput_table(results) + [""]
    if sparse is not None:
        lines += sparse.lines() + [""]
    for run in steady:
        lines += _steady_lines(run) + [""]
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _throughput_table(results: list[Result]) -> list[str]:
    """Rows with events/s; ours with their ratios to (B) naive Faust and (C) the read ceiling
    of the same table."""
    by = {r.name[:3]: r for r in results}
    b, c = by.get("(B)"), by.get("(C)")
    lines = ["| what | events/s | A/B | A/C | CPU µs/event | A/B by CPU | peak RSS "
             "| broker CPU/s | broker RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rss = f"{r.peak_rss_mb:.0f} MiB" if r.peak_rss_mb else "-"
        ours = r.name.startswith("(A)")
        ab = f"{r.rate / b.rate:.2f}" if ours and b else "-"
        ac = f"{r.rate / c.rate:.3f}" if ours and c else "-"
        cpu = f"{r.cpu_us:.1f}" if r.cpu_us else "-"
        ab_cpu = f"{b.cpu_us / r.cpu_us:.2f}" if ours and b and b.cpu_us and r.cpu_us else "-"
        bcpu = f"{r.broker_cpu:.2f}" if r.broker_cpu is not None else "-"
        brss = f"{r.broker_rss_mb:,.0f} MiB" if r.broker_rss_mb else "-"
        lines.append(f"| {r.name} | {r.rate:,.0f} | {ab} | {ac} | {cpu} | {ab_cpu} | {rss} "
                     f"| {bcpu} | {brss} |")
    return lines


def _steady_lines(run: Steady) -> list[str]:
    def p(v: float | None) -> str:
        return f"{v:,.0f} ms" if v is not None else "n/a"
    what = "Soak run" if run.name == "soak" else "Latency run"
    spreads = []
    for after in (0.2, 0.5):
        lo, hi = run.rss_spread(after)
        spreads.append(f"from {after:.0%} of the run on between {lo:,.0f} and {hi:,.0f} MiB "
                       f"(±{50 * (hi - lo) / max((hi + lo) / 2, 1e-9):.1f}%)")
    return [
        f"{what}: {run.offered:,} events offered at {run.rate:,.0f}/s (achieved "
        f"{run.offered_rate:,.0f}/s; every producer's linger {run.linger_ms:g} ms) to one "
        f"worker for {run.seconds:,.0f} s "
        f"({run.processed:,} processed). CPU seconds per second: worker {run.worker_cpu:.2f}, "
        f"embedded broker {run.broker_cpu:.2f} (broker RSS at the end "
        f"{run.broker_rss_mb:,.0f} MiB). Rebalances of the worker: {run.rebalances} (1: its "
        "own join; more: the group expired it under load).",
        "",
        f"- event-to-publish latency over {run.latency_count:,} published profiles after the "
        f"first {run.warmup_s:g} s (Kafka timestamp of the event to delivery of the record; "
        f"from the worker's histogram, linear within a bucket): **p50 {p(run.p50_ms)}, p99 "
        f"{p(run.p99_ms)}** (p99 with the first seconds: {p(run.p99_all_ms)}); of which the "
        f"broker's share (Kafka timestamp to the event's arrival in the worker, "
        f"`profiles_fetch_delay_seconds`): p50 {p(run.fetch_p50_ms)}, p99 {p(run.fetch_p99_ms)};",
        "- worker RSS: " + ", ".join(f"{run.rss_at(f):,.0f} MiB at {f:.0%}"
                                     for f in (0.1, 0.25, 0.5, 0.75, 1.0))
        + "; " + "; ".join(spreads) + ";",
        f"- state cache at the end: {run.cache.get('entries', 0):,} of "
        f"{run.cache.get('capacity', 0):,} entries, {run.cache.get('hits', 0):,} hits, "
        f"{run.cache.get('misses', 0):,} misses.",
    ]


# ---------------------------------------------------------------- offline engines

OFFLINE_HEADING = "## Offline engines"
LABELS_PER_USER = 10


def run_offline_bench(workdir: Path, cfg: ProfileConfig, items: Path, events: Path,
                      say: Callable[[str], None] = print, spark_master: str = "local[2]") -> str:
    """`profiles batch` on the reference path, the local engine (1 worker, all cores) and Spark,
    and `profiles training-set` on each engine, over the same events: a markdown section."""
    import random

    from offline import local
    from offline import spark as spark_engine
    from reference.batch import run_batch as reference_batch

    workdir.mkdir(parents=True, exist_ok=True)
    local.keep_freed_memory()           # as `profiles batch` does (the bench ends with this)
    cores = os.cpu_count() or 1
    users, (lo, hi) = _users_and_span(events)
    rng = random.Random(7)
    labels = workdir / "labels.jsonl"
    labels.write_bytes(b"".join(orjson.dumps({"user_id": u, "ts": rng.randint(lo, hi)}) + b"\n"
                                for u in users for _ in range(LABELS_PER_USER)))
    n_labels = len(users) * LABELS_PER_USER
    rows: list[tuple[str, float, float | None, float, float | None]] = []
    # (what, events/s, labels/s, seconds, CPU µs per event)

    def timed(name: str, fn, n_label: int | None = None, repeat: int = 3,
              cpu: bool = True) -> None:
        """The best of `repeat` runs: the machine is shared, the best run is the least
        disturbed one. CPU: this process and its finished children (the local engine's
        workers), the least of the runs; not for Spark (its JVM lives on)."""
        secs = cpu_s = float("inf")
        for _ in range(repeat):
            c0 = _cpu_of_self_and_children()
            t0 = time.perf_counter()
            report = fn()
            secs = min(secs, time.perf_counter() - t0)
            cpu_s = min(cpu_s, _cpu_of_self_and_children() - c0)
        us = cpu_s / report.events * 1e6 if cpu else None
        rows.append((name, report.events / secs, n_label / secs if n_label else None, secs, us))
        say(f"  {name}: {report.events / secs:,.0f} events/s ({secs:.2f} s"
            + (f", {us:.2f} CPU µs/event)" if us is not None else ")"))

    out = workdir / "out"
    load = os.getloadavg()[0]
    say(f"offline engines: {cores} cores; {n_labels:,} labels; load average {load:.1f}")
    timed("batch, reference (reference.batch, one process)", lambda: reference_batch(
        cfg, items, events, out / "reference.jsonl", progress_stream=None))
    for w in sorted({1, cores}):
        timed(f"batch `--engine local --workers {w}`", lambda w=w: local.run_batch(
            cfg, items, events, out / f"local{w}.jsonl", workers=w, progress_stream=None))
    for w in sorted({1, cores}):
        timed(f"training-set `--engine local --workers {w}`", lambda w=w: local.run_training_set(
            cfg, items, events, labels, out / f"train-local{w}.jsonl", workers=w,
            progress_stream=None), n_labels)
    # Spark last: its session's threads would make the local engine spawn its workers
    t0 = time.perf_counter()
    session = spark_engine.session(spark_master)
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    spark_engine.run_batch(cfg, items, str(events), out / "spark-cold.jsonl",
                           master=spark_master, progress_stream=None)
    cold = time.perf_counter() - t0
    timed(f"batch `--engine spark --master {spark_master}`", lambda: spark_engine.run_batch(
        cfg, items, str(events), out / "spark.jsonl", master=spark_master,
        progress_stream=None), repeat=2, cpu=False)
    timed(f"training-set `--engine spark --master {spark_master}`",
          lambda: spark_engine.run_training_set(
              cfg, items, str(events), str(labels), out / "train-spark.jsonl",
              master=spark_master, progress_stream=None), n_labels, repeat=2, cpu=False)
    session.stop()
    load = max(load, os.getloadavg()[0])
    ref = rows[0][1]
    lines = [
        OFFLINE_HEADING,
        "",
        f"`profiles bench --only offline` (also part of `make bench`) on "
        f"{time.strftime('%Y-%m-%d')}, {_machine().split('; broker')[0]}; load average up to "
        f"{load:.1f} (the machine is shared). The same events file ({len(users):,} users, "
        f"{_count_lines(events):,} lines), {n_labels:,} labels ({LABELS_PER_USER} per user at "
        f"random times). Each row is the best of 3 runs (Spark: 2) from files to files, the "
        f"Spark ones in a warm session (starting it took {start:.1f} s, the first batch run "
        f"{cold:.1f} s). CPU: of this process and the engine's worker processes, per event "
        f"(steadier than the rate on a shared machine).",
        "",
        "| what | events/s | vs reference | labels/s | seconds | CPU µs/event |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, eps, lps, secs, us in rows:
        lab = f"{lps:,.0f}" if lps else "-"
        cpu_cell = f"{us:.2f}" if us is not None else "-"
        lines.append(f"| {name} | {eps:,.0f} | {eps / ref:.2f} | {lab} | {secs:.2f} | "
                     f"{cpu_cell} |")
    return "\n".join(lines) + "\n"


def _cpu_of_self_and_children() -> float:
    import resource
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b""))


def _users_and_span(events: Path) -> tuple[list[int], tuple[int, int]]:
    """The valid user ids of an events file and its span of valid timestamps."""
    users, ts = set(), []
    for line in events.read_bytes().splitlines():
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and type(obj.get("user_id")) is int and obj["user_id"] >= 0 \
                and type(obj.get("timestamp")) is int and obj["timestamp"] < 2 ** 33:
            users.add(obj["user_id"])
            ts.append(obj["timestamp"])
    return sorted(users), (min(ts), max(ts))


def run_offline_only(workdir: Path, users: int, days: int,
                     say: Callable[[str], None] = print) -> str:
    """Only the offline rows (`profiles bench --only offline`), on the bench's sample."""
    from features.config import parse_config
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"sample data: {users:,} users, {days} days")
    write_sample(SampleSpec(users=users, days=days), workdir / "sample")
    cfg = parse_config({"mapping_index": str(workdir / "mapping_index.json")}, env={})
    return run_offline_bench(workdir / "offline", cfg, workdir / "sample" / "item_feat_dict.json",
                             workdir / "sample" / "events.jsonl", say)


# ---------------------------------------------------------------- the sparse workload



def _log_day_and_user(line: bytes, day: int) -> tuple[int, object]:
    """The line's log day (the day of the largest valid timestamp so far: a late event stays in
    the day it arrived in) and its user (a line without one is its own)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return day, ("line", line)
    if not isinstance(obj, dict):
        return day, ("line", line)
    ts: Any = obj.get("timestamp")
    uid: Any = obj.get("user_id")
    valid = type(uid) is int and uid >= 0 and type(ts) is int and 0 <= ts < 2 ** 33 and \
        ("event_type" in obj or obj.get("action_type") in (0, 1, 2))     # the sample's
    if valid:
        day = max(day, ts // 86400)
    return day, uid if type(uid) is int else ("line", line)


def sparse_order(lines: list[bytes], seed: int = 11) -> list[bytes]:
    """The lines reordered within each log day so that each user's own lines keep their order
    but nearly every line is a different user's than its neighbours, as a live stream with many
    users in session looks: a user's n lines of a day are spread evenly over the day's
    sequence (the k-th at (k + offset) / n, a random offset per user and day)."""
    import random
    rng = random.Random(seed)
    out: list[bytes] = []
    day_of_line: list[tuple[int, object]] = []
    day = -1
    for line in lines:
        day, user = _log_day_and_user(line, day)
        day_of_line.append((day, user))
    i = 0
    while i < len(lines):
        d = day_of_line[i][0]
        j = i
        queues: dict[object, list[bytes]] = {}
        while j < len(lines) and day_of_line[j][0] == d:
            queues.setdefault(day_of_line[j][1], []).append(lines[j])
            j += 1
        placed: list[tuple[float, bytes]] = []
        for q in queues.values():
            offset = rng.random()
            placed.extend(((k + offset) / len(q), line) for k, line in enumerate(q))
        placed.sort(key=lambda p: p[0])
        out.extend(line for _, line in placed)
        i = j
    return out


def distinct_per_batch(lines: list[bytes], batch: int = SPARSE_BATCH) -> tuple[float, int]:
    """Mean and smallest number of distinct users (keys) in consecutive runs of `batch` lines."""
    users = [_log_day_and_user(line, 0)[1] for line in lines]
    counts = [len(set(users[k:k + batch])) for k in range(0, len(users) - batch + 1, batch)]
    return (sum(counts) / len(counts), min(counts)) if counts else (0.0, 0)


def write_sparse_sample(out_dir: Path, users: int, days: int) -> dict:
    """`profiles sample --users USERS --days DAYS`, its events reordered by `sparse_order`
    (events.jsonl) and kept in time order (events-time-order.jsonl)."""
    info = write_sample(SampleSpec(users=users, days=days), out_dir)
    src = out_dir / "events.jsonl"
    lines = src.read_bytes().splitlines()
    src.rename(out_dir / "events-time-order.jsonl")
    sparse = sparse_order(lines)
    assert sorted(sparse) == sorted(lines)
    src.write_bytes(b"\n".join(sparse) + b"\n")
    mean, least = distinct_per_batch(sparse)
    return {**info, "distinct_mean": mean, "distinct_min": least,
            "time_order_distinct_mean": distinct_per_batch(lines)[0]}


@dataclass
class SparseRows:
    users: int
    days: int
    events: int
    distinct_mean: float        # distinct users per SPARSE_BATCH events, sparse order
    distinct_min: int
    time_order_distinct: float  # the same in time order
    results: list[Result]
    peers: PeerRows | None = None

    def lines(self) -> list[str]:
        return [
            f"Sparse sample: `profiles sample --users {self.users} --days {self.days}` "
            f"({self.events:,} events), reordered within each day so that each user's own "
            f"order is kept: {self.distinct_mean:,.0f} distinct users per {SPARSE_BATCH:,} "
            f"events on average, at least {self.distinct_min:,} (in time order "
            f"{self.time_order_distinct:,.0f}). Topics of its own, one worker.",
            "",
            *_throughput_table(self.results),
            *(["", *self.peers.lines()] if self.peers else []),
        ]


def run_sparse_rows(base: dict, workdir: Path, users: int, days: int, broker: BrokerProbe,
                    say: Callable[[str], None], with_peers: bool = True) -> SparseRows:
    """(C), (B) and our pipeline with one worker on the sparse sample, on topics of its own
    (the broker is running)."""
    say(f"sparse sample: {users:,} users, {days} days")
    info = write_sparse_sample(workdir / "sparse", users, days)
    items, events = workdir / "sparse" / "item_feat_dict.json", workdir / "sparse" / "events.jsonl"
    topics = _own_topics("sparse")
    kafka = {**base["kafka"], "topics": topics}
    cfg = load_config(_config(base, workdir, "bench-sparse-producer", embedded.free_port(),
                              kafka=kafka))
    load_items(cfg, items, progress=None)
    total = info["events"]
    n, _ = produce_events(cfg, events, progress=None)
    say(f"produced {n:,} sparse events ({info['distinct_mean']:,.0f} distinct users per "
        f"{SPARSE_BATCH:,} on average, at least {info['distinct_min']:,}); measuring")
    results = [asyncio.run(_read_ceiling(cfg, total, broker))]
    say(f"  sparse {results[-1].name}: {results[-1].rate:,.0f}/s")
    p_naive = embedded.free_port()
    naive_cfg = _config(base, workdir, "bench-sparse-naive", p_naive, kafka=kafka)
    # its cost per event does not depend on how users mix: timed over the first events only
    results.append(_timed_processes(
        f"(B) naive Faust, one table update per event (the first {SPARSE_NAIVE_EVENTS:,})",
        [(["-m", "tools.bench.naive_faust", str(naive_cfg), str(p_naive)],
          f"http://127.0.0.1:{p_naive}")], min(total, SPARSE_NAIVE_EVENTS), workdir, say,
        broker))
    say(f"  sparse {results[-1].name}: {results[-1].rate:,.0f}/s")
    port = embedded.free_port()
    wcfg = _config(base, workdir, "bench-sparse-pipeline", port, kafka=kafka)
    results.append(_timed_processes("(A) our pipeline, 1 worker", _worker_cmds(wcfg, [port]),
                                    total, workdir, say, broker))
    say(f"  sparse {results[-1].name}: {results[-1].rate:,.0f}/s")
    peers = _peer_rows(f"Peers on the sparse sample ({total:,} events)", base, workdir,
                       "sparse-peers", kafka, results[0].rate, say) if with_peers else None
    return SparseRows(users, days, total, info["distinct_mean"], info["distinct_min"],
                      info["time_order_distinct_mean"], results, peers)


def _peer_rows(title: str, base: dict, workdir: Path, name: str, kafka: dict,
               ceiling_rate: float | None, say: Callable[[str], None]) -> PeerRows:
    """Our worker, quixstreams and Kafka Streams on `kafka`'s user-events topic (filled)."""
    port = embedded.free_port()
    app_id = f"bench-{name}-ours"
    cfg_path = _config(base, workdir, app_id, port, kafka=kafka)
    cfg = load_config(cfg_path)
    say(f"{title}: our worker, quixstreams and Kafka Streams, each from its process start "
        "until its group has committed every partition's end")
    return run_peer_rows(
        f"{title}, one process each, timed from the process start until its consumer group "
        "had committed every partition's end (tools/bench/peers):", cfg.kafka.bootstrap_servers,
        cfg.kafka.topics.user_events, workdir / name,
        ([sys.executable, *worker_argv(cfg_path, 1, port)], app_id, None), say,
        ceiling_rate=ceiling_rate, cwd=ROOT)


def run_large_peer_rows(base: dict, workdir: Path, users: int, days: int, broker: BrokerProbe,
                        say: Callable[[str], None]) -> PeerRows:
    """The read ceiling, then our worker and the peers, on a sparse sample of `users` users
    (start-up counts less than on the smaller one)."""
    say(f"large sparse sample: {users:,} users, {days} days")
    info = write_sparse_sample(workdir / "large", users, days)
    topics = _own_topics("large")
    kafka = {**base["kafka"], "topics": topics}
    cfg = load_config(_config(base, workdir, "bench-large-producer", embedded.free_port(),
                              kafka=kafka))
    load_items(cfg, workdir / "large" / "item_feat_dict.json", progress=None)
    n, _ = produce_events(cfg, workdir / "large" / "events.jsonl", progress=None)
    say(f"produced {n:,} events ({info['distinct_mean']:,.0f} distinct users per "
        f"{SPARSE_BATCH:,} on average); measuring")
    ceiling = asyncio.run(_read_ceiling(cfg, info["events"], broker))
    say(f"  large {ceiling.name}: {ceiling.rate:,.0f}/s")
    return _peer_rows(f"Peers on a sparse sample of {users:,} users ({info['events']:,} "
                      f"events; read ceiling {ceiling.rate:,.0f}/s)", base, workdir,
                      "large-peers", kafka, ceiling.rate, say)


# ---------------------------------------------------------------- the output producers

PRODUCER_RECORDS = 50_000       # per topic kind and client
PRODUCER_COMMIT = 1_000         # records handed over per flush (as a commit does)


def _output_records(cfg: ProfileConfig, n: int) -> dict[str, list]:
    """n records of each kind the output producer writes, as the workers make them."""
    from features.profile import Profile
    from streams.monitoring.counters import WorkerCounts
    from streams.pipeline.publishing import Publishing
    pub = Publishing(cfg.kafka.topics, None, WorkerCounts(), 0)     # type: ignore[arg-type]
    windows = {W: {"actions": 31, "active_days": 9, "actions_per_active_day": 3.44,
                   "unique_items": 27, "unique_item_ratio": 0.871, "avg_dwell_time": 41.2,
                   "sessions": 12, "avg_session_duration": 311.5, "rate_exposure": 0.71,
                   "rate_click": 0.26, "rate_conversion": 0.03} for W in (1, 7, 30)}

    class Msg:
        topic, partition, key = cfg.kafka.topics.user_events, 3, b"123456"
        value = b'{"user_id": 123456, "item_id": 5, "timestamp": 99999999999999, ' \
                b'"action_type": 1, "event_id": "u123456-17"}'

    msg = Msg()
    out: dict[str, list] = {"profile-updates": [], "profile-aggregates": [], "dead letters": []}
    for i in range(n):
        uid = 100000 + i
        p = Profile(uid, 1764500000 + i, {"106": [1060000002, 1060000001], "107": [1070000001],
                                          "108": [1080000002], "110": [1100000001]},
                    ["technology", "entertainment"], ["click_frequency"], 2, 1, 0.6321, {})
        out["profile-updates"].append(pub.profile_record(p, 17, "event"))
        out["profile-aggregates"].append(pub.aggregates_record(uid, 20420, windows))
        msg.offset = i      # type: ignore[attr-defined]
        out["dead letters"].append(pub.dead_letter_record("future_timestamp", "in the future",
                                                          msg))
    return out


def _producer_topic(kind: str, client: str) -> str:
    return f"bench-out-{kind.replace(' ', '-')}-{client}"


async def _producer_cpu(publisher, records: list, topic: str) -> float:
    """CPU seconds of this process (all its threads: librdkafka sends on threads of its own)
    to hand `records` to `publisher` and deliver them, PRODUCER_COMMIT at a time."""
    import dataclasses
    records = [dataclasses.replace(r, topic=topic) for r in records]
    await publisher.send_many(records[:10])     # connected and warm
    await publisher.flush()
    t0 = time.process_time()
    for k in range(0, len(records), PRODUCER_COMMIT):
        await publisher.send_many(records[k:k + PRODUCER_COMMIT])
        await publisher.flush()
    return time.process_time() - t0


def run_producer_rows(cfg: ProfileConfig, say: Callable[[str], None],
                      n: int = PRODUCER_RECORDS, repeat: int = 3) -> list[str]:
    """CPU µs per record delivered, aiokafka against librdkafka (streams.io.publisher), for each
    kind of record the output producer writes; best of `repeat` (the machine is shared)."""
    from streams.io.kafka_security import client_kwargs
    from streams.io.producer_settings import aiokafka_producer_kwargs, librdkafka_producer_settings
    from streams.io.publisher import AiokafkaPublisher, LibrdkafkaPublisher
    kinds = _output_records(cfg, n)
    topics = [_producer_topic(kind, client) for kind in kinds
              for client in ("aiokafka", "librdkafka")]
    sizes = {k: sum(len(r.value) for r in v) / len(v) for k, v in kinds.items()}
    best: dict[tuple[str, str], float] = {}

    async def measure() -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        admin = AIOKafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers,
                                    **client_kwargs(cfg))
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            await admin.create_topics([NewTopic(t, cfg.kafka.partitions, 1) for t in topics
                                       if t not in existing])
        finally:
            await admin.close()
        for attempt in range(repeat):
            for client in ("aiokafka", "librdkafka"):
                pub = AiokafkaPublisher(cfg.kafka.bootstrap_servers,
                                        aiokafka_producer_kwargs(cfg)) \
                    if client == "aiokafka" else \
                    LibrdkafkaPublisher(cfg.kafka.bootstrap_servers,
                                        librdkafka_producer_settings(cfg))
                try:
                    for kind, records in kinds.items():
                        secs = await _producer_cpu(pub, records, _producer_topic(kind, client))
                        key = (kind, client)
                        best[key] = min(best.get(key, float("inf")), secs / n * 1e6)
                finally:
                    await pub.stop()
    say(f"output producers: {n:,} records of each kind per client, best of {repeat}")
    asyncio.run(measure())
    lines = [f"Output producers (`streams/io/publisher.py`): CPU µs per record of this process "
             f"(all threads) to hand {n:,} records to the producer {PRODUCER_COMMIT:,} at a time "
             f"and deliver them (flush), best of {repeat}; the same broker, topics of their own.",
             "",
             "| records | bytes | aiokafka µs | librdkafka µs | ratio |",
             "|---|---:|---:|---:|---:|"]
    for kind in kinds:
        a, r = best[(kind, "aiokafka")], best[(kind, "librdkafka")]
        lines.append(f"| {kind} | {sizes[kind]:,.0f} | {a:.1f} | {r:.1f} | {a / r:.1f}× |")
        say(f"  {kind}: aiokafka {a:.1f} µs, librdkafka {r:.1f} µs per record")
    return lines
