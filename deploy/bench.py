"""`profiles bench` / `make bench`: side-by-side throughput on one broker, in one run.

(A) our pipeline, 1 and 2 workers; (B) naive Faust, one table update per event; (C) the read
ceiling, aiokafka getmany + orjson.loads. All read the same pre-filled `user-events`, each with
its own consumer group (app id), timed from its first event to its last. Plus the batch path's
events/s and the state's bytes per user. Prints a table and writes BENCHMARKS.md.
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import orjson
import yaml
from aiokafka import AIOKafkaConsumer

from deploy import broker as embedded
from deploy.clients import load_items, produce_events
from features.batch import BatchReport, build_states, run_batch
from features.config import NO_SCHEDULED_RUNS, ProfileConfig, load_config
from features.encoding import encode
from features.runtime import FeatureRuntime
from features.sample import SampleSpec, write_sample

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    peak_rss_mb: float | None = None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _get_count(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url + "/stats", timeout=2) as r:
            return json.loads(r.read())["counts"].get("events_in", 0)
    except (OSError, ValueError):
        return None


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _timed_processes(name: str, cmds: list[tuple[list[str], str]], total: int, workdir: Path,
                     say: Callable[[str], None], timeout: float = 900) -> Result:
    """Start processes, time from the first event counted to `total` (summed over them)."""
    procs = []
    for i, (cmd, url) in enumerate(cmds):
        log = open(workdir / f"{name.replace(' ', '_')}-{i}.log", "ab")
        procs.append((subprocess.Popen([sys.executable, *cmd], cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True), url))
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
        seconds = time.monotonic() - t0
        rss = max((_peak_rss_mb(p.pid) or 0) for p, _ in procs)
        return Result(name, total - n0, seconds, rss)
    finally:
        for p, _ in procs:
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


async def _read_ceiling(cfg: ProfileConfig, total: int) -> Result:
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
                t0 = time.monotonic()
            for records in batches.values():
                for r in records:
                    try:
                        orjson.loads(r.value)
                    except orjson.JSONDecodeError:
                        pass
                    n += 1
        return Result("(C) read ceiling: aiokafka getmany + orjson", n,
                      time.monotonic() - t0)
    finally:
        await consumer.stop()


def _config(base: dict, workdir: Path, app_id: str, web_port: int) -> Path:
    raw = json.loads(json.dumps(base))
    raw.setdefault("worker", {}).update({"app_id": app_id, "web_port": web_port,
                                         "data_dir": str(workdir / app_id),
                                         "log_level": "warn"})
    p = workdir / f"{app_id}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def run_bench(workdir: Path, users: int, days: int, say: Callable[[str], None] = print) -> str:
    workdir.mkdir(parents=True, exist_ok=True)
    port = embedded.free_port()
    base = {"kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": 8},
            "embedded_broker": {"port": port, "run_dir": str(workdir / "run")},
            "mapping_index": str(workdir / "mapping_index.json"),
            "scheduled_update": dict(NO_SCHEDULED_RUNS)}     # no run mid-measurement
    cfg_path = _config(base, workdir, "bench-pipeline-1", embedded.free_port())
    cfg = load_config(cfg_path)
    say(f"sample data: {users:,} users, {days} days")
    info = write_sample(SampleSpec(users=users, days=days), workdir / "sample")
    items, events = workdir / "sample" / "item_feat_dict.json", workdir / "sample" / "events.jsonl"
    total = info["events"]
    embedded.start(cfg.run_dir, port)
    results: list[Result] = []
    try:
        load_items(cfg, items, progress=None)
        n, _ = produce_events(cfg, events, progress=None)
        say(f"produced {n:,} events to user-events (8 partitions); measuring")
        results.append(asyncio.run(_read_ceiling(cfg, total)))
        say(f"  {results[-1].name}: {results[-1].rate:,.0f}/s")
        p_naive = embedded.free_port()
        naive_cfg = _config(base, workdir, "bench-naive", p_naive)
        results.append(_timed_processes(
            "(B) naive Faust, one table update per event",
            [(["-m", "deploy.bench_baseline", str(naive_cfg), str(p_naive)],
              f"http://127.0.0.1:{p_naive}")], total, workdir, say))
        say(f"  {results[-1].name}: {results[-1].rate:,.0f}/s")
        for workers in (1, 2):
            app_id = f"bench-pipeline-{workers}w"
            ports = [embedded.free_port() for _ in range(workers)]
            wcfg = _config(base, workdir, app_id, ports[0])
            cmds = [(["-m", "deploy", "--config", str(wcfg), "worker", "--instance-id",
                      str(i + 1), "--web-port", str(ports[i])], f"http://127.0.0.1:{ports[i]}")
                    for i in range(workers)]
            results.append(_timed_processes(f"(A) our pipeline, {workers} worker(s)", cmds,
                                            total, workdir, say))
            say(f"  {results[-1].name}: {results[-1].rate:,.0f}/s")
    finally:
        embedded.stop(cfg.run_dir)
    report = run_batch(cfg, items, events, workdir / "batch" / "profiles.jsonl",
                       progress_stream=None)
    rt = FeatureRuntime.from_config(cfg, items)
    with open(events, "rb") as f:
        states = build_states(rt, f, BatchReport())
    sizes = np.array([len(encode(s, rt.engine.tz)) for s in states.values() if not s.empty])
    n_ev = np.array([sum(b.total for b in s.days.values()) for s in states.values()
                     if not s.empty])
    typical = sizes[(n_ev >= 80) & (n_ev <= 120)]
    return _report(results, report.events_per_second, sizes, typical, total, users, days)


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; broker: embedded Tansu on the same machine")


def _report(results: list[Result], batch_eps: float, sizes, typical, total: int, users: int,
            days: int) -> str:
    by = {r.name[:3]: r for r in results}
    a1 = next(r for r in results if r.name.startswith("(A)") and "1 worker" in r.name)
    lines = [
        "# Benchmarks",
        "",
        f"`make bench` on {time.strftime('%Y-%m-%d')}: {_machine()}.",
        f"Sample: {users:,} users, {days} days, {total:,} events; 8 partitions.",
        "",
        "| what | events/s | peak RSS |",
        "|---|---:|---:|",
    ]
    for r in results:
        rss = f"{r.peak_rss_mb:.0f} MiB" if r.peak_rss_mb else "-"
        lines.append(f"| {r.name} | {r.rate:,.0f} | {rss} |")
    lines += [
        f"| batch path (`profiles batch`, JSONL file to profiles) | {batch_eps:,.0f} | - |",
        "",
        f"Ratios: A(1 worker)/B = {a1.rate / by['(B)'].rate:.2f}, "
        f"A(1 worker)/C = {a1.rate / by['(C)'].rate:.3f}.",
        "",
        f"State bytes per user (encoded): median {np.median(sizes):,.0f}, p99 "
        f"{np.percentile(sizes, 99):,.0f}, max {sizes.max():,.0f}; users with 80-120 events in "
        f"30 days: median {np.median(typical):,.0f}" if len(typical) else
        f"State bytes per user (encoded): median {np.median(sizes):,.0f}",
        "",
        "Not measured yet: event-to-publish latency at a fixed offered rate.",
    ]
    return "\n".join(lines) + "\n"
