"""`profiles bench-jobs` / `make bench-jobs`: scheduled runs over a large state, on a real worker.

A pool of real user states (the sample generator's users through the batch path, ~100 events in
30 days each) is copied under N user ids straight into the worker's RocksDB partitions, with a
due-index entry each: D users due today, the rest later. Then one worker starts on the embedded
broker and the hourly and daily runs are triggered over HTTP and timed (the worker's own report,
and the worker process's CPU time; publishes and changelog writes go to the broker as in
production). The records are in the columnar format (4, features.columnar), as the runs write
them.

The jobs concept in the benchmark layer (the runs: streams/jobs/; the command:
deploy/cli/jobs.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from deploy import broker as embedded
from deploy.worker_process import spawn, worker_argv
from deploy.workers import call, ready
from features import columnar
from features.config import NO_SCHEDULED_RUNS, load_config
from features.events import day_of
from features.runtime import FeatureRuntime
from features.schedule import NEVER, feature_fingerprint, next_change_day
from features.state import UserState
from offline.batch_io import BatchReport
from reference.batch import build_states
from streams.state.rocksdb import open_store
from streams.state.table_keys import (
    FEATURES_KEY,
    PARTITION_KEY,
    PartitionClock,
    due_key,
    pack_int,
    user_key,
)
from streams.web.auth import api_token
from tools.bench.proc import cpu_seconds, peak_rss_mb
from tools.bench.suite import ROOT, _machine
from tools.data.sample import END_TS, SampleSpec, write_sample

PARTITIONS = 8


def _prefill(cfg, tables: Path, users: int, due: int, due_pool: list, quiet_pool: list,
             stream_time: int, say) -> None:
    """Users 1..due get states due today, the rest states whose next change is later."""
    stores = [open_store(tables / f"user-state-{p}.db") for p in range(PARTITIONS)]
    fp = pack_int(feature_fingerprint(cfg))
    t0 = time.monotonic()
    batches: list[list[tuple[bytes, bytes]]] = [[] for _ in range(PARTITIONS)]
    for uid in range(1, users + 1):
        p = uid % PARTITIONS
        pool = due_pool if uid <= due else quiet_pool
        state, blob = pool[uid % len(pool)]
        b = batches[p]
        b.append((user_key(uid), blob))
        if state.due_day >= 0:
            b.append((due_key(state.due_day, uid), b""))
        if uid % 50_000 == 0 or uid == users:
            for q in range(PARTITIONS):
                stores[q].put_many(batches[q])
            batches = [[] for _ in range(PARTITIONS)]
            say(f"  state written for {uid:,} users ({time.monotonic() - t0:.0f} s)")
    for store in stores:
        store.put(PARTITION_KEY, PartitionClock(stream_time, -1).pack())
        store.put(FEATURES_KEY, fp)
        store.close()


@dataclass
class JobRun:
    name: str               # hourly, daily, daily --full
    seconds: float          # the worker's own report
    wall: float
    cpu: float
    load: float
    totals: dict


@dataclass
class JobsBench:
    users: int
    due: int
    mib: float              # RocksDB on disk
    events_per_user: float
    rss_mib: float
    runs: list[JobRun]

    def seconds(self, name: str) -> float | None:
        return next((r.seconds for r in self.runs if r.name == name), None)

    def section(self) -> str:
        lines = [
            "## Scheduled runs (`make bench-jobs`)",
            "",
            f"{time.strftime('%Y-%m-%d')}: {_machine()}.",
            f"{self.users:,} users in state ({self.mib:,.0f} MiB of RocksDB, "
            f"format-4 records, "
            f"{self.events_per_user:.0f} events per user in 30 days), {self.due:,} due, "
            f"{PARTITIONS} partitions, one worker; peak worker RSS {self.rss_mib:,.0f} MiB. CPU: "
            f"the worker process's user + system time during the run; load: the 1-minute load "
            f"average (the larger of its values before and after the run).",
            "",
            "| run | seconds (worker) | seconds (wall) | CPU seconds | load | visited | "
            "re-evaluated | published | days closed | retired | index repaired |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in self.runs:
            t = r.totals
            lines.append(f"| {r.name} | {r.seconds:.2f} | {r.wall:.2f} | {r.cpu:.2f} | "
                         f"{r.load:.1f} | {t['visited']:,} | {t['evaluated']:,} | "
                         f"{t['published']:,} | {t.get('closed_days', 0):,} | {t['retired']:,} | "
                         f"{t['index_repaired']:,} |")
        return "\n".join(lines) + "\n"


def run_bench_jobs(workdir: Path, users: int, due: int, full_daily: bool,
                   say: Callable[[str], None] = print) -> str:
    return time_jobs(workdir, users, due, full_daily, say).section()


def time_jobs(workdir: Path, users: int, due: int, full_daily: bool,
              say: Callable[[str], None] = print) -> JobsBench:
    workdir = workdir.resolve()     # the config resolves relative paths against its folder
    workdir.mkdir(parents=True, exist_ok=True)
    port, web = embedded.free_port(), embedded.free_port()
    raw = {"kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": PARTITIONS},
           "embedded_broker": {"port": port, "run_dir": str(workdir / "run")},
           "mapping_index": str(workdir / "mapping_index.json"),
           "worker": {"app_id": "bench-jobs", "data_dir": str(workdir / "data"),
                      "web_port": web, "log_level": "warn"},
           "scheduled_update": dict(NO_SCHEDULED_RUNS)}    # runs are timed when we trigger them
    cfg_path = workdir / "bench-jobs.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(cfg_path)

    say("state pool: real users from the sample generator through the batch path")
    info = write_sample(SampleSpec(users=3000, days=35), workdir / "sample")
    rt = FeatureRuntime.from_config(cfg, workdir / "sample" / "item_feat_dict.json")
    with open(workdir / "sample" / "events.jsonl", "rb") as f:
        states = build_states(rt, f, BatchReport())
    # As if yesterday's runs had published each profile, closed each day stream time had
    # passed and set its due day: today's hourly run visits the users due today (a day leaves
    # a window, or yesterday closes), publishes the profiles whose arrays really change and the
    # aggregates of the days that close.
    stream_time = END_TS - 1
    today = day_of(stream_time, 0)
    due_pool: list[tuple[UserState, bytes]] = []
    quiet_pool: list[tuple[UserState, bytes]] = []
    for uid, s in states.items():
        if s.empty:
            continue
        as_of = max(s.T, stream_time - 86400)
        p = rt.engine.evaluate(uid, s, as_of)
        s.version, s.published_digest, s.published_as_of = 1, p.digest(), p.as_of
        if day_of(s.T, 0) < day_of(as_of, 0):
            s.closed_day = day_of(s.T, 0)
        s.due_day = next_change_day(s, day_of(as_of, 0), rt.engine.windows)
        if s.due_day == NEVER:
            continue                # idle: the runs would have retired it long ago
        blob = columnar.encode(columnar.from_reference(s, 0))
        (due_pool if s.due_day == today else quiet_pool).append((s, blob))
    n_pool = len(due_pool) + len(quiet_pool)
    events_per_user = info["events"] / max(1, n_pool)
    say(f"  {n_pool:,} distinct states, {events_per_user:.0f} events each on average; "
        f"{len(due_pool):,} of them due today")

    tables = workdir / "data" / "instance-1" / "v1" / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    say(f"writing {users:,} users ({due:,} due) into {PARTITIONS} RocksDB partitions")
    _prefill(cfg, tables, users, due, due_pool, quiet_pool, stream_time, say)
    bytes_on_disk = sum(f.stat().st_size for f in tables.rglob("*") if f.is_file())

    embedded.start(cfg.run_dir, port)
    proc = None
    rows: list[JobRun] = []
    try:
        proc = spawn(worker_argv(cfg_path), workdir / "worker.log", cwd=ROOT)
        url = f"http://127.0.0.1:{web}"
        deadline = time.monotonic() + 300
        while not ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {workdir / 'worker.log'}")
            time.sleep(0.5)
        # the worker checks its due index against the headers after assignment: let it finish
        while call(url + "/jobs")["index_unchecked"] or call(url + "/jobs")["running"]:
            time.sleep(0.5)
        token = api_token(cfg)
        runs = [("hourly", ""), ("daily", "")] + ([("daily", "?full=1")] if full_daily else [])
        for job, q in runs:
            say(f"running {job}{' --full' if q else ''} ...")
            load0 = os.getloadavg()[0]
            cpu0 = cpu_seconds(proc.pid)
            t0 = time.monotonic()
            rep = call(f"{url}/jobs/{job}{q}", "POST", token, timeout=3600)
            wall = time.monotonic() - t0
            cpu = cpu_seconds(proc.pid) - cpu0
            load = max(load0, os.getloadavg()[0])
            t = rep["totals"]
            rows.append(JobRun(f"{job}{' --full' if q else ''}", rep["seconds"], wall, cpu, load,
                               t))
            say(f"  {job}: {rep['seconds']:.2f} s in the worker ({wall:.2f} s wall, "
                f"{cpu:.2f} s CPU, load {load:.1f}): {json.dumps(t)}")
        rss = peak_rss_mb(proc.pid)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        embedded.stop(cfg.run_dir)
    return JobsBench(users, due, bytes_on_disk / 2**20, events_per_user, rss or 0,
                     rows)
