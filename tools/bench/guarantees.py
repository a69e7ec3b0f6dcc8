"""What transactions cost (issue 27, item 4): one worker under `at_least_once` and under
`exactly_once_v2`, at several `real_time_update.commit_interval`s, side by side on one broker:
- throughput on the sparse sample (filled once; each run a group of its own reads it from the
  start), events/s and CPU per event;
- event-to-publish latency at a steady rate (topics of each run's own).
The pairs run interleaved (at_least_once, then exactly_once_v2, per interval), so that a
machine that slows down during the run weighs on both."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from deploy import broker as embedded
from deploy.clients import load_items, produce_events
from features.config import load_config
from tools.bench.suite import (
    BrokerProbe,
    Result,
    Steady,
    _config,
    _own_topics,
    _steady_run,
    _timed_processes,
    _worker_cmds,
    write_sparse_sample,
)

GUARANTEES = ("at_least_once", "exactly_once_v2")
INTERVALS = (0.25, 1.0, 5.0)        # real_time_update.commit_interval, seconds


@dataclass
class GuaranteeRow:
    guarantee: str
    interval: float
    throughput: Result
    latency: Steady | None
    sample_events: int          # the sparse sample's (the timed span starts at the first)


def _with(base: dict, guarantee: str, interval: float) -> dict:
    raw = json.loads(json.dumps(base))
    raw["kafka"] = {**raw["kafka"], "processing_guarantee": guarantee}
    raw["real_time_update"] = {**raw.get("real_time_update", {}), "commit_interval": interval}
    return raw


def run_guarantee_rows(base: dict, workdir: Path, users: int, days: int, broker: BrokerProbe,
                       say: Callable[[str], None], intervals: tuple[float, ...] = INTERVALS,
                       latency_rate: float = 5000, latency_seconds: float = 40,
                       events_for_latency: Path | None = None) -> list[GuaranteeRow]:
    """The rows, on a running broker; `events_for_latency`: the log the steady runs replay
    (the sparse sample's when None)."""
    say(f"guarantees: sparse sample of {users:,} users, {days} days")
    info = write_sparse_sample(workdir / "guarantees-sample", users, days)
    sample = workdir / "guarantees-sample"
    topics = _own_topics("guarantees")
    kafka = {**base["kafka"], "topics": topics}
    cfg = load_config(_config(base, workdir, "bench-guarantees-producer", embedded.free_port(),
                              kafka=kafka))
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    total = info["events"]
    produce_events(cfg, sample / "events.jsonl", progress=None)
    rows = []
    for interval in intervals:
        for guarantee in GUARANTEES:
            tag = f"{guarantee}-{interval:g}s"
            raw = _with(base, guarantee, interval)
            port = embedded.free_port()
            wcfg = _config(raw, workdir, f"bench-guarantees-{tag}", port, kafka={
                **raw["kafka"], "topics": topics})
            name = f"{guarantee}, commit_interval {interval:g} s"
            throughput = _timed_processes(name, _worker_cmds(wcfg, [port]), total, workdir,
                                          say, broker)
            say(f"  {name}: {throughput.rate:,.0f} events/s, {throughput.cpu_us:.1f} µs/event")
            latency = None
            if latency_seconds > 0:
                latency = _steady_run(f"latency-{tag.replace('.', '_')}", raw, workdir,
                                      events_for_latency or sample / "events.jsonl",
                                      latency_rate, latency_seconds, broker.pid, say)
                say(f"  {name}: p50 {latency.p50_ms or 0:,.0f} ms, p99 "
                    f"{latency.p99_ms or 0:,.0f} ms at {latency_rate:,.0f}/s")
            rows.append(GuaranteeRow(guarantee, interval, throughput, latency, total))
    return rows


def guarantee_lines(rows: list[GuaranteeRow], users: int, latency_rate: float) -> list[str]:
    """Markdown: one row per (guarantee, interval), exactly_once_v2's share of at_least_once's
    throughput at the same interval."""
    alo = {r.interval: r for r in rows if r.guarantee == "at_least_once"}

    def ms(v: float | None) -> str:
        return f"{v:,.0f}" if v is not None else "n/a"
    out = [f"One worker, sparse sample of {users:,} users ({rows[0].sample_events:,} events; "
           "each run a group "
           f"of its own from the start), then {latency_rate:,.0f} events/s offered for the "
           "latency (p50/p99 after the first 10 s), pairs interleaved:",
           "",
           "| guarantee | commit_interval s | events/s | CPU µs/event | vs at_least_once "
           "| p50 ms | p99 ms | worker CPU/s at the steady rate |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        base = alo.get(r.interval)
        share = f"{r.throughput.rate / base.throughput.rate:.2f}" \
            if base is not None and r is not base and base.throughput.rate else "-"
        lat = r.latency
        cpu = f"{r.throughput.cpu_us:.1f}" if r.throughput.cpu_us else "-"
        out.append(f"| {r.guarantee} | {r.interval:g} | {r.throughput.rate:,.0f} | {cpu} | "
                   f"{share} | {ms(lat.p50_ms if lat else None)} | "
                   f"{ms(lat.p99_ms if lat else None)} | "
                   f"{f'{lat.worker_cpu:.2f}' if lat else '-'} |")
    return out
