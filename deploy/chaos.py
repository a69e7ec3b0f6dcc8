"""`make chaos` / `profiles chaos`: sample events through 3 workers while a seeded schedule
injects faults, then every user's latest `profile-updates` record and state are compared with
the batch path on the same events.

Faults: SIGKILL of a worker (restarted 1-2 s later), SIGKILL with the worker's RocksDB deleted
before the restart (full recovery from the changelog), SIGSTOP past the session timeout then
SIGCONT, a fourth worker joining and leaving (the partition assignment changes twice), and a
burst of hostile payloads (features.hostile).
"""
from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson
import yaml
from aiokafka import AIOKafkaProducer

from deploy import broker as embedded
from deploy.clients import latest_by_key, load_items, produce_events
from deploy.verify import batch_profiles, compare
from deploy.workers import call, ready
from features.batch import BatchReport, build_states
from features.config import NO_SCHEDULED_RUNS, load_config
from features.events import Rejection
from features.hostile import hostile_payloads
from features.runtime import FeatureRuntime
from features.sample import SampleSpec, write_sample
from streams.faust_compat.clients import refresh_metadata

ROOT = Path(__file__).resolve().parents[1]
SESSION_TIMEOUT = 10.0          # streams/compat.py, embedded broker


@dataclass
class Fault:
    at: float
    kind: str                   # sigkill | wipe | sigstop | reassign | hostile
    worker: int | None = None

    def describe(self) -> str:
        w = f" worker {self.worker}" if self.worker else ""
        return f"t+{self.at:5.1f}s {self.kind}{w}"


FAULT_KINDS = ("sigkill", "wipe", "sigstop", "reassign", "hostile")


def fault_schedule(seed: int, duration: float, kills: int = 5, workers: int = 3,
                   skip: tuple[str, ...] = ()) -> list[Fault]:
    rng = random.Random(seed)
    kinds = [k for k in ["sigkill"] * kills + ["wipe", "sigstop", "reassign", "hostile"]
             if k not in skip]
    slots = sorted(rng.uniform(2.0, duration) for _ in kinds)
    rng.shuffle(kinds)
    return [Fault(round(t, 1), k, None if k in ("reassign", "hostile") else
                  rng.randrange(1, workers + 1)) for t, k in zip(slots, kinds)]


@dataclass
class ChaosReport:
    seed: int
    events: int
    hostile: int
    schedule: list[str]
    faults_done: list[str] = field(default_factory=list)
    users: int = 0
    mismatched: int = 0
    missing: int = 0
    unexpected: int = 0
    lost_events: int = 0
    double_applied: int = 0
    states_missing: int = 0
    stale_publishes: int = 0       # a user's record with a lower version than one before it
    stale_state_writes: int = 0    # a changelog state older (source offset) than one before it
    seconds: float = 0.0
    examples: list[dict] = field(default_factory=list)   # users whose states differ

    @property
    def ok(self) -> bool:
        """The guarantees: the stale counts are measured and printed, not part of this (records
        already handed to a producer when a process freezes go out when it thaws:
        docs/RELIABILITY.md)."""
        return not (self.mismatched or self.missing or self.unexpected or self.lost_events or
                    self.double_applied or self.states_missing)

    def lines(self) -> list[str]:
        return [f"chaos seed {self.seed}: {self.events:,} sample events + {self.hostile:,} "
                f"hostile payloads through 3 workers in {self.seconds:.0f} s",
                "faults injected:", *[f"  {f}" for f in self.faults_done],
                f"users compared: {self.users:,}",
                f"mismatched profiles: {self.mismatched}", f"missing profiles: {self.missing}",
                f"unexpected profiles: {self.unexpected}",
                f"lost events: {self.lost_events}",
                f"double-applied events: {self.double_applied}",
                f"users without state: {self.states_missing}",
                f"stale publishes (a version lower than an earlier one; measured, see "
                f"docs/RELIABILITY.md): {self.stale_publishes}",
                f"stale state writes (changelog source offset went back; measured): "
                f"{self.stale_state_writes}",
                *[f"  differs: {e}" for e in self.examples],
                "RESULT: " + ("OK, all zero" if self.ok else "FAILED")]


class Workers:
    def __init__(self, cfg_path: Path, cfg, base_port: int, logs: Path):
        self.cfg_path, self.cfg, self.base_port, self.logs = cfg_path, cfg, base_port, logs
        self.procs: dict[int, subprocess.Popen] = {}
        self.starts: dict[int, int] = {}

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base_port + i - 1}"

    def start(self, i: int) -> None:
        n = self.starts[i] = self.starts.get(i, 0) + 1
        log = self.logs / f"worker-{i}-{n}.log"
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "deploy", "--config", str(self.cfg_path), "worker",
             "--instance-id", str(i), "--web-port", str(self.base_port + i - 1),
             "--log-file", str(log)], cwd=ROOT, stdin=subprocess.DEVNULL,
            stdout=open(self.logs / f"worker-{i}-{n}.out", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def signal(self, i: int, sig: int) -> None:
        p = self.procs.get(i)
        if p and p.poll() is None:
            p.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                p.wait(30)

    def wipe(self, i: int) -> None:
        shutil.rmtree(self.cfg.data_dir / f"instance-{i}", ignore_errors=True)

    def healthy(self, i: int) -> bool:
        return ready(self.url(i)) is not None

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.signal(i, signal.SIGCONT)
            self.signal(i, signal.SIGKILL)


def _produce_hostile(cfg, payloads: list[tuple[bytes, bytes | None, str | None]]) -> int:
    async def run():
        p = AIOKafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                             max_request_size=16 * 1024 * 1024)
        await p.start()
        sent = 0
        try:
            for raw, key, _ in payloads:
                try:
                    await p.send(cfg.kafka.topics.user_events, raw, key=key)
                    sent += 1
                except Exception:             # e.g. the broker refuses a 10 MB record
                    pass
            await p.flush()
        finally:
            await p.stop()
        return sent
    return asyncio.run(run())


def run_chaos(workdir: Path, users: int, seed: int, hostile: int,
              say: Callable[[str], None] = print, kills: int = 5, rate: float = 5000,
              skip: tuple[str, ...] = ()) -> ChaosReport:
    t_start = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    port, base = embedded.free_port(), _ports(4)
    raw = {"kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": 6},
           "embedded_broker": {"port": port, "run_dir": str(workdir / "run")},
           "mapping_index": str(workdir / "mapping_index.json"),
           "worker": {"data_dir": str(workdir / "data"), "log_level": "info"},
           "real_time_update": {"batch_size": 500},
           # counts compare with the batch path at each user's T: no wall-clock runs
           "scheduled_update": dict(NO_SCHEDULED_RUNS)}
    cfg_path = workdir / "chaos.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    cfg = load_config(cfg_path)
    sample = workdir / "sample"
    info = write_sample(SampleSpec(users=users, days=35, activity=0.4, seed=seed), sample)
    n_events = info["events"]
    duration = n_events / rate
    plan = fault_schedule(seed, duration, kills, skip=skip)
    payloads = list(hostile_payloads(hostile, seed=seed))
    report = ChaosReport(seed, n_events, len(payloads) if "hostile" not in skip else 0,
                         [f.describe() for f in plan])
    say(f"{n_events:,} sample events at {rate:,.0f}/s (~{duration:.0f} s); fault schedule:")
    for f in plan:
        say(f"  {f.describe()}")

    embedded.start(cfg.run_dir, port)
    w = Workers(cfg_path, cfg, base, logs)
    try:
        load_items(cfg, sample / "item_feat_dict.json", progress=None)
        for i in (1, 2, 3):
            w.start(i)
        _wait(lambda: all(w.healthy(i) for i in (1, 2, 3)), 120, "3 workers healthy")
        done = threading.Event()
        threading.Thread(target=lambda: (produce_events(cfg, sample / "events.jsonl", rate,
                                                        progress=None), done.set()),
                         daemon=True).start()
        t0 = time.monotonic()
        hostile_sent = 0
        for f in plan:
            time.sleep(max(0.0, f.at - (time.monotonic() - t0)))
            if f.kind in ("sigkill", "wipe"):
                w.signal(f.worker, signal.SIGCONT)
                w.signal(f.worker, signal.SIGKILL)
                time.sleep(random.Random(seed + int(f.at * 10)).uniform(1, 2))
                if f.kind == "wipe":
                    w.wipe(f.worker)
                w.start(f.worker)
            elif f.kind == "sigstop":
                w.signal(f.worker, signal.SIGSTOP)
                time.sleep(SESSION_TIMEOUT + 5)
                w.signal(f.worker, signal.SIGCONT)
            elif f.kind == "reassign":
                w.start(4)
                time.sleep(8)
                w.signal(4, signal.SIGTERM)
            elif f.kind == "hostile":
                hostile_sent = _produce_hostile(cfg, payloads)
            report.faults_done.append(f.describe() + (f" ({hostile_sent:,} sent)"
                                                      if f.kind == "hostile" else ""))
            say(f"  done: {report.faults_done[-1]}")
        if not done.wait(600):
            raise RuntimeError("producing the sample did not finish")
        say("all produced; waiting for the workers to catch up")
        _wait(lambda: all(w.healthy(i) for i in (1, 2, 3)) and _lag_zero(w, cfg), 600,
              "lag 0 on every partition")
        sent = payloads if any(f.kind == "hostile" for f in plan) else []
        report = _verify(cfg, w, sample, sent, report, workdir, say)
    finally:
        w.stop_all()
        embedded.stop(cfg.run_dir)
    report.seconds = time.monotonic() - t_start
    return report


def _ports(n: int) -> int:
    import socket
    for _ in range(100):
        base = embedded.free_port()
        socks = []
        try:
            for k in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + k))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(1)
    raise RuntimeError(f"timed out waiting for {what}")


def _lag_zero(w: Workers, cfg) -> bool:
    seen = {}
    for i in (1, 2, 3):
        try:
            m = call(w.url(i) + "/monitor", timeout=5)
        except Exception:
            return False
        for p, v in m["lag"].items():
            seen[int(p)] = v
    return len(seen) == cfg.kafka.partitions and all(v == 0 for v in seen.values())


def _regressions(cfg) -> tuple[int, int]:
    """Records that went back in time, in log order: what a worker that woke up after losing
    its partitions (SIGSTOP past the session timeout) would leave behind."""
    from features.encoding import StateDecodeError, read_header

    async def scan(topic: str, value_of) -> int:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        c = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
        await c.start()
        back, best = 0, {}
        try:
            tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or
                                                            await _parts(c, topic))]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            idle = 0
            while idle < 3:
                batch = await c.getmany(timeout_ms=500, max_records=20000)
                idle = 0 if batch else idle + 1
                for recs in batch.values():
                    for r in recs:
                        v = value_of(r)
                        if v is None:
                            continue
                        if v < best.get(r.key, -1):
                            back += 1
                        best[r.key] = max(v, best.get(r.key, -1))
        finally:
            await c.stop()
        return back

    async def _parts(c, topic):
        await refresh_metadata(c)
        return c.partitions_for_topic(topic) or ()

    def version(r):
        return orjson.loads(r.value)["version"] if r.value else None

    def source_offset(r):
        if not r.value or not r.key[:1].isdigit():
            return None
        try:
            return read_header(r.value).source_offset
        except StateDecodeError:
            return None
    changelog = f"{cfg.worker.app_id}-user-state-changelog"
    return (asyncio.run(scan(cfg.kafka.topics.profile_updates, version)),
            asyncio.run(scan(changelog, source_offset)))


def _verify(cfg, w: Workers, sample: Path, payloads, report: ChaosReport, workdir: Path,
            say) -> ChaosReport:
    # The batch path's input: the sample, then the hostile payloads the validator accepts with
    # their message key (the batch file has no keys; rejected ones are left out).
    rt = FeatureRuntime.from_config(cfg, sample / "item_feat_dict.json")
    everything = workdir / "everything.jsonl"
    now = time.time()
    with open(everything, "wb") as out:
        out.write((sample / "events.jsonl").read_bytes())
        for raw, key, _ in payloads:
            if type(rt.parser.parse_message(raw, key, now)) is not Rejection:
                out.write(raw + b"\n")
    expected = batch_profiles(cfg, sample / "item_feat_dict.json", everything,
                              workdir / "batch.jsonl")
    deadline = time.monotonic() + 120
    while True:
        published = {int(k): v for k, v in
                     latest_by_key(cfg, cfg.kafka.topics.profile_updates).items()}
        c = compare(published, expected)
        if c.ok or time.monotonic() > deadline:
            break
        time.sleep(2)
    report.users = c.users
    report.mismatched, report.missing = len(c.mismatched), len(c.missing)
    report.unexpected = len(c.unexpected)
    say(f"profiles: {c.summary()}")
    # states: events per day held, against the batch path's states
    with open(everything, "rb") as f:
        states = build_states(rt, f, BatchReport())
    live: dict[int, dict] = {}
    ids = sorted(states)
    for i in (1, 2, 3):
        for k in range(0, len(ids), 1000):
            chunk = ",".join(map(str, ids[k:k + 1000]))
            got = call(f"{w.url(i)}/states?ids={chunk}", timeout=30)
            live.update({int(u): s for u, s in got.items() if s is not None})
    for uid, st in states.items():
        have = live.get(uid)
        want = {str(d): b.total for d, b in st.days.items()}
        if have is None:
            report.states_missing += 1
            report.lost_events += sum(want.values())
            continue
        diffs = {d: have["days"].get(d, 0) - want.get(d, 0)
                 for d in set(want) | set(have["days"])}
        for d, diff in diffs.items():
            if diff > 0:
                report.double_applied += diff
            else:
                report.lost_events -= diff
        if any(diffs.values()) and len(report.examples) < 10:
            report.examples.append({"user_id": uid, "live_T": have["T"], "batch_T": st.T,
                                    "live_offset": have["source_offset"],
                                    "batch_offset": st.source_offset,
                                    "days": {d: v for d, v in sorted(diffs.items()) if v}})
    report.stale_publishes, report.stale_state_writes = _regressions(cfg)
    (workdir / "report.json").write_text(json.dumps(report.__dict__, indent=2, default=str))
    return report
