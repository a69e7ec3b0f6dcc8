"""`profiles bench-failover`: how long the partitions of a SIGKILLed worker go unserved, and how
fast their states come back from the changelog (issue 27's failover and restore figures).

Two workers on the embedded broker (8 partitions) take USERS users' events (EVENTS_PER_USER
each, on distinct days, so every state holds several day rows); once both have caught up, one
is SIGKILLed. The other is polled (`/health`) until it serves every partition again. Timed from
the kill: until the group moves the partitions (the survivor's rebalance count grows: the
session timeout, `kafka.client.session_timeout_ms`), and until the survivor answers `ok` with
every partition (the restore of the dead worker's changelog partitions, or of what its standby
copies lack). The restore rate is the changelog records (and bytes) of the moved partitions
over the time from the rebalance to `ok`. With `--standby 1` each worker keeps standby copies
(`worker.standby_replicas`). Figures only: nothing is asserted.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from deploy import broker as embedded
from deploy.clients import produce_events
from deploy.worker_process import spawn, worker_argv
from features.config import NO_SCHEDULED_RUNS, load_config
from streams.io.kafka_security import client_kwargs
from streams.pipeline.topology import state_changelog_topic
from tools.data.daily import write_daily_events

PARTITIONS = 8
EVENTS_PER_USER = 4
T0 = 1_764_000_000 - 10 * 86400
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Failover:
    users: int
    standby: int
    events: int
    moved_partitions: int
    changelog_records: int      # of the moved partitions
    changelog_bytes: int        # their log segments on the broker's disk
    detect_seconds: float       # kill -> the survivor's rebalance began
    served_seconds: float       # kill -> the survivor serves every partition
    catch_up_seconds: float     # both workers from start to caught up (the fill)

    @property
    def restore_seconds(self) -> float:
        return max(self.served_seconds - self.detect_seconds, 1e-9)

    def row(self) -> str:
        gib = self.changelog_bytes / 2 ** 30
        return (f"| {self.users:,} | {self.standby} | {self.moved_partitions} | "
                f"{self.changelog_records:,} | {self.changelog_bytes / 2 ** 20:,.1f} | "
                f"{self.detect_seconds:.1f} | {self.served_seconds:.1f} | "
                f"{self.restore_seconds:.1f} | "
                f"{self.changelog_records / self.restore_seconds:,.0f} | "
                f"{self.restore_seconds / gib if gib else 0:,.0f} |")


HEADER = ("| users in state | standby replicas | partitions moved | changelog records moved | "
          "MiB | s to rebalance | s to served | s restoring | records/s restored | "
          "s per GiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def _health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read() or b"{}")
    except OSError:
        return None


def _events_in(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as r:
            return int(json.loads(r.read())["counts"].get("events_in", 0))
    except OSError:
        return 0


async def _changelog_records(cfg: Any, topic: str, partitions: list[int]) -> int:
    """Records in the changelog partitions (end - beginning offsets: the writer's records are
    not transactional, so each offset is one record)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    c = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                         enable_auto_commit=False, **client_kwargs(cfg))
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends, starts = await c.end_offsets(tps), await c.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await c.stop()


def _log_bytes(run_dir: Path, topic: str, partitions: list[int]) -> int:
    """Bytes of the partitions' log segments on the embedded broker's disk."""
    return sum(f.stat().st_size for p in partitions
               for f in run_dir.glob(f"**/{topic}-{p}/*.log"))


def run_failover(workdir: Path, users: int, standby: int,
                 say: Callable[[str], None] = print) -> Failover:
    workdir.mkdir(parents=True, exist_ok=True)
    port = embedded.free_port()
    app_id = f"failover-{users}-{standby}"
    ports = [embedded.free_port(), embedded.free_port()]
    raw = {"kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": PARTITIONS},
           "embedded_broker": {"port": port, "run_dir": str(workdir / "run")},
           "mapping_index": str(workdir / "mapping_index.json"),
           "scheduled_update": dict(NO_SCHEDULED_RUNS),
           "worker": {"app_id": app_id, "data_dir": str(workdir / "data"),
                      "log_level": "warn", "standby_replicas": standby}}
    cfg_path = workdir / "failover.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(cfg_path)
    events = workdir / "events.jsonl"
    total = write_daily_events(events, users, EVENTS_PER_USER, T0)
    embedded.start(cfg.run_dir, port)
    procs = []
    try:
        say(f"failover: {users:,} users, {total:,} events, standby replicas {standby}")
        t_fill = time.monotonic()
        procs = [spawn(worker_argv(cfg_path, i + 1, p), workdir / f"w{i + 1}.log", cwd=ROOT)
                 for i, p in enumerate(ports)]
        produce_events(cfg, events, progress=None)
        deadline = time.monotonic() + 3600
        while sum(_events_in(p) for p in ports) < total:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not catch up")
            time.sleep(0.5)
        while not all((h := _health(p)) and h.get("status") == "ok" and not h["rebalancing"]
                      for p in ports):
            time.sleep(0.5)
        catch_up = time.monotonic() - t_fill
        time.sleep(3)                   # a commit and the changelog's last acks
        victim = _health(ports[0]) or {}
        moved = sorted(int(tp.rsplit(":", 1)[1]) for tp in victim.get("assigned_partitions", [])
                       if tp.startswith(cfg.kafka.topics.user_events + ":"))
        survivor = ports[1]
        before = (_health(survivor) or {}).get("rebalances", 0)
        say(f"  caught up in {catch_up:.1f} s; SIGKILL of worker 1 (partitions {moved})")
        t0 = time.monotonic()
        os.kill(procs[0].pid, signal.SIGKILL)
        detect = served = None
        want = {f"{cfg.kafka.topics.user_events}:{p}" for p in range(PARTITIONS)}
        while served is None:
            h = _health(survivor) or {}
            now = time.monotonic() - t0
            if detect is None and h.get("rebalances", 0) > before:
                detect = now
            if detect is not None and h.get("status") == "ok" and not h.get("rebalancing") \
                    and set(h.get("assigned_partitions", [])) >= want:
                served = now
            if now > 600:
                raise TimeoutError("the survivor did not serve every partition in 600 s")
            time.sleep(0.05)
        topic = state_changelog_topic(cfg)
        records = asyncio.run(_changelog_records(cfg, topic, moved))
        size = _log_bytes(cfg.run_dir, topic, moved)
        out = Failover(users, standby, total, len(moved), records, size, detect or 0.0,
                       served, catch_up)
        say(f"  rebalance after {out.detect_seconds:.1f} s, every partition served after "
            f"{out.served_seconds:.1f} s ({records:,} changelog records, "
            f"{size / 2 ** 20:,.1f} MiB moved)")
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        embedded.stop(cfg.run_dir)


def section(rows: list[Failover], session_timeout_s: float) -> str:
    lines = ["## Failover and restore (`profiles bench-failover`)", "",
             f"{time.strftime('%Y-%m-%d')}: two workers, {PARTITIONS} partitions, one "
             f"SIGKILLed once both had caught up; {EVENTS_PER_USER} events per user on distinct "
             f"days. The group notices a dead member after the session timeout "
             f"({session_timeout_s:.0f} s); the rest is the survivor's restore.", "", *HEADER]
    lines += [r.row() for r in rows]
    return "\n".join(lines) + "\n"
