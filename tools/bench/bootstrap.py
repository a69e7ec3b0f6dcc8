"""`profiles bench-bootstrap`: users and events bootstrapped per second (`profiles bootstrap`,
docs/BOOTSTRAP.md) on this machine, with the local engine and with Spark, into the embedded
broker.

USERS users with EVENTS_PER_USER events each on distinct days (so every state holds several
day rows and closes days: the aggregates of those days are published too), in one JSONL file;
handed over at a time after the last event. Each engine bootstraps its own application id
(its own group, changelog and journal) on the same broker. Figures only: nothing is asserted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from deploy import broker as embedded
from features.config import NO_SCHEDULED_RUNS, load_config
from tools.data.daily import write_daily_events

PARTITIONS = 8
EVENTS_PER_USER = 8
T0 = 1_764_000_000 - 10 * 86400


@dataclass
class BootstrapRun:
    engine: str
    users: int
    events: int
    seconds: float
    build_seconds: float
    write_seconds: float
    states: int
    records: int            # profiles, aggregates and dead letters published

    def row(self) -> str:
        return (f"| {self.engine} | {self.users:,} | {self.events:,} | {self.seconds:,.1f} | "
                f"{self.build_seconds:,.1f} | {self.write_seconds:,.1f} | "
                f"{self.users / self.seconds:,.0f} | {self.events / self.seconds:,.0f} | "
                f"{self.states:,} | {self.records:,} |")


HEADER = ("| engine | users | events | s | s to build | s to write | users/s | events/s | "
          "states written | records published |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def run_bootstrap_bench(workdir: Path, users: int, engines: list[str], workers: int,
                        master: str, say: Callable[[str], None] = print) -> list[BootstrapRun]:
    import sys

    from bootstrap.handover import HandOver
    from bootstrap.run import bootstrap
    workdir.mkdir(parents=True, exist_ok=True)
    events = workdir / "events.jsonl"
    say(f"bench-bootstrap: writing {users:,} users' events")
    total = write_daily_events(events, users, EVENTS_PER_USER, T0)
    port = embedded.free_port()
    run_dir = workdir / "run"
    embedded.start(run_dir, port)
    out = []
    try:
        for engine in engines:
            raw = {"kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": PARTITIONS},
                   "embedded_broker": {"port": port, "run_dir": str(run_dir)},
                   "mapping_index": str(workdir / "mapping_index.json"),
                   "scheduled_update": dict(NO_SCHEDULED_RUNS),
                   "worker": {"app_id": f"bench-bootstrap-{engine}",
                              "data_dir": str(workdir / "data")}}
            cfg_path = workdir / f"{engine}.yaml"
            cfg_path.write_text(yaml.safe_dump(raw))
            cfg = load_config(cfg_path)
            say(f"bench-bootstrap: {engine}, {users:,} users, {total:,} events")
            t0 = time.perf_counter()
            s = bootstrap(cfg, None, events, HandOver(PARTITIONS, until_ts=T0 + 40 * 86400),
                          engine=engine, workers=workers, master=master, out=sys.stderr)
            seconds = time.perf_counter() - t0
            r = BootstrapRun(engine, s.users, s.events, seconds, s.build_seconds,
                             s.write_seconds, s.states_written,
                             s.profiles + s.aggregates + sum(s.dead_letters.values()))
            say(f"  {r.row()}")
            out.append(r)
    finally:
        embedded.stop(run_dir)
    return out


def section(rows: list[BootstrapRun], workers: int, master: str) -> str:
    lines = ["## Bootstrap from the lake (`profiles bench-bootstrap`)", "",
             f"{time.strftime('%Y-%m-%d')}: `profiles bootstrap` of one JSONL log into the "
             f"embedded broker ({PARTITIONS} partitions), handed over at a time; "
             f"{EVENTS_PER_USER} events per user on distinct days. Local engine: {workers} "
             f"worker processes; Spark: `{master}`. Timed from the call to the journal's "
             "\"done\": the cluster checks, the scan, the build, and the writes (states, "
             "partition clocks, each user's profile, the closed days' aggregates, the group "
             "offsets).", "", *HEADER]
    lines += [r.row() for r in rows]
    return "\n".join(lines) + "\n"
