"""`make chaos` / `profiles chaos`: sample events through 3 workers while a seeded schedule
injects faults, then every user's latest `profile-updates` record and state are compared with
the batch path on the same events.

Worker faults: SIGKILL of a worker (restarted 1-2 s later), SIGKILL with the worker's RocksDB
deleted before the restart (full recovery from the changelog), SIGSTOP past the session timeout
then SIGCONT, a fourth worker joining and leaving (the partition assignment changes twice), and
a burst of hostile payloads (tools.data.hostile). Broker faults: the embedded broker paused
(SIGSTOP 20 s, then SIGCONT), SIGKILLed and started again 1-2 s later from its log dirs,
restarted (a controlled shutdown, then a start), every client connection to it cut at once, and
200 ms of added latency for 30 s; every Kafka client of the run (workers, producers, readers)
reaches the broker through a TCP proxy on loopback (tools/chaos/proxy.py) that makes the last
two.

The verdict is read in a stable group (`group_view`): every worker healthy, one generation,
each partition owned once, the same before and after the read.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence, cast

import orjson
import yaml
from aiokafka import AIOKafkaProducer

from deploy import broker as embedded
from deploy.clients import latest_by_key, load_items, produce_events
from deploy.worker_process import WorkerProcess, worker_argv
from deploy.workers import WorkerCallError, call, ready
from features.config import NO_SCHEDULED_RUNS, load_config
from features.events import Rejection
from features.runtime import FeatureRuntime
from offline.batch_io import BatchReport
from reference.batch import build_states
from streams.faust_compat.aiokafka_calls import install_rebootstrap, refresh_metadata
from streams.pipeline.topology import state_changelog_topic
from tools.chaos.faults import BROKER_PAUSE, LATENCY, LATENCY_FOR, fault_schedule
from tools.chaos.proxy import BrokerProxy
from tools.data.hostile import hostile_payloads
from tools.data.sample import SampleSpec, write_sample
from tools.verify import batch_profiles, compare

ROOT = Path(__file__).resolve().parents[2]   # the checkout: workers run from it
WORKER_IDS = (1, 2, 3)          # the group; a fourth worker comes and goes (reassign)


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
    # the same, as a read_committed reader sees profile-updates (required 0 under
    # exactly_once_v2; without transactions it is the count above)
    stale_committed: int = 0
    guarantee: str = "exactly_once_v2"
    stale_state_writes: int = 0    # a changelog state older (source offset) than one before it
    worker_exits: int = 0          # worker processes that ended without the schedule's signal
    error: str | None = None       # the run could not finish (e.g. a worker never caught up)
    seconds: float = 0.0
    examples: list[dict] = field(default_factory=list)   # users whose states differ

    @property
    def ok(self) -> bool:
        """The guarantees. The stale counts are measured and printed, not part of this under
        at_least_once (records already handed to a producer when a process freezes go out when
        it thaws: docs/RELIABILITY.md); under exactly_once_v2 a read_committed reader must see
        none."""
        return not (self.mismatched or self.missing or self.unexpected or self.lost_events or
                    self.double_applied or self.states_missing or self.worker_exits or
                    self.error or (self.guarantee == "exactly_once_v2" and self.stale_committed))

    def lines(self) -> list[str]:
        return [f"chaos seed {self.seed}: {self.events:,} sample events + {self.hostile:,} "
                f"hostile payloads through 3 workers ({self.guarantee}) in "
                f"{self.seconds:.0f} s",
                "faults injected:", *[f"  {f}" for f in self.faults_done],
                f"users compared: {self.users:,}",
                f"mismatched profiles: {self.mismatched}", f"missing profiles: {self.missing}",
                f"unexpected profiles: {self.unexpected}",
                f"lost events: {self.lost_events}",
                f"double-applied events: {self.double_applied}",
                f"users without state: {self.states_missing}",
                f"worker exits not caused by the schedule: {self.worker_exits}",
                f"stale publishes (a version lower than an earlier one; measured, see "
                f"docs/RELIABILITY.md): {self.stale_publishes}",
                f"stale publishes a read_committed reader sees ({self.guarantee}"
                f"{': required 0' if self.guarantee == 'exactly_once_v2' else ''}): "
                f"{self.stale_committed}",
                f"stale state writes (changelog source offset went back; measured): "
                f"{self.stale_state_writes}",
                *[f"  differs: {_brief(e)}" for e in self.examples],
                *([f"ERROR: {self.error}"] if self.error else []),
                "RESULT: " + ("OK, all zero" if self.ok else "FAILED")]


def _brief(example: dict) -> str:
    """One line of an example: a state's differing days, or a mismatched profile with its last
    records and states (the whole history is in the run's mismatched.json)."""
    if "profile_updates" not in example:
        return str(example)
    recs = [f"p{r['partition']}@{r['offset']} v{r.get('version')} {r.get('trigger')} "
            f"as_of={r.get('as_of')} {r.get('features')}" for r in example["profile_updates"][-3:]]
    sts = [f"p{r['partition']}@{r['offset']} src={r.get('source_offset')} v{r.get('version')}"
           for r in example["changelog"][-3:]]
    return (f"user {example['user_id']}: published {example['published']['features']}, expected "
            f"{example['expected']['features']}; {len(example['profile_updates'])} records, last "
            f"{recs}; {len(example['changelog'])} states, last {sts}")


# (column, ChaosReport attribute) of the per-seed table; the last three are measured, not
# required (but "stale read committed" under exactly_once_v2)
TABLE = (("mismatched", "mismatched"), ("missing", "missing"), ("unexpected", "unexpected"),
         ("lost events", "lost_events"), ("double-applied", "double_applied"),
         ("without state", "states_missing"), ("worker exits", "worker_exits"),
         ("stale publishes", "stale_publishes"), ("stale read committed", "stale_committed"),
         ("stale state writes", "stale_state_writes"))


def runs_table(reports: list[ChaosReport]) -> list[str]:
    """Markdown: one row per seed with every count, and the totals."""
    head = ["seed", "events", "users", *[c for c, _ in TABLE], "seconds", "result"]
    rows = [["| " + " | ".join(head) + " |", "|" + "---:|" * (len(head) - 1) + "---|"]]
    for r in reports:
        cells = [str(r.seed), f"{r.events:,}", f"{r.users:,}",
                 *[f"{getattr(r, a):,}" for _, a in TABLE], f"{r.seconds:.0f}",
                 "OK" if r.ok else ("ERROR: " + r.error if r.error else "FAILED")]
        rows.append(["| " + " | ".join(cells) + " |"])
    ok = sum(r.ok for r in reports)
    totals = ["**total**", f"{sum(r.events for r in reports):,}",
              f"{sum(r.users for r in reports):,}",
              *[f"{sum(getattr(r, a) for r in reports):,}" for _, a in TABLE],
              f"{sum(r.seconds for r in reports):.0f}", f"{ok} of {len(reports)} OK"]
    rows.append(["| " + " | ".join(totals) + " |"])
    return [line for row in rows for line in row]


class Workers:
    def __init__(self, cfg_path: Path, cfg, base_port: int, logs: Path):
        self.cfg_path, self.cfg, self.base_port, self.logs = cfg_path, cfg, base_port, logs
        self.procs: dict[int, WorkerProcess] = {}
        self.starts: dict[int, int] = {}
        self.stopped: set[int] = set()      # sent SIGKILL/SIGTERM by the schedule
        self.exits: list[str] = []          # ended without one: "worker N (code C, log L)"

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base_port + i - 1}"

    def start(self, i: int) -> None:
        self.stopped.discard(i)
        n = self.starts[i] = self.starts.get(i, 0) + 1
        port = self.base_port + i - 1
        self.procs[i] = WorkerProcess(
            worker_argv(self.cfg_path, i, port, self.logs / f"worker-{i}-{n}.log"),
            self.logs / f"worker-{i}-{n}.out", port, i, cwd=ROOT).start()

    def signal(self, i: int, sig: int) -> None:
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.check_exits()              # an exit before this one is the worker's own
            self.stopped.add(i)
        p = self.procs.get(i)
        if p is not None:
            p.signal(sig)

    def check_exits(self) -> list[str]:
        """Workers that ended by themselves (a crash: nothing in the schedule stops a worker
        without restarting it, except worker 4's SIGTERM)."""
        for i, p in self.procs.items():
            if i not in self.stopped and not p.alive():
                self.stopped.add(i)
                self.exits.append(f"worker {i} (exit code {p.returncode}; "
                                  f"{self.logs / f'worker-{i}-{self.starts[i]}.log'})")
        return self.exits

    def wipe(self, i: int) -> None:
        shutil.rmtree(self.cfg.data_dir / f"instance-{i}", ignore_errors=True)

    def healthy(self, i: int) -> bool:
        return ready(self.url(i)) is not None

    def stop_all(self) -> None:
        self.check_exits()
        self.stopped.update(self.procs)
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
              skip: tuple[str, ...] = (), standby: int = 0,
              client_settings: dict | None = None, broker_pause: float = BROKER_PAUSE,
              latency_for: float = LATENCY_FOR,
              guarantee: str = "exactly_once_v2") -> ChaosReport:
    """`client_settings`: kafka.client settings of the workers and this run's clients (the
    short run in tests/integration/test_chaos.py takes the broker's least session timeout,
    6 s, and shorter faults still past it); `broker_pause`, `latency_for`: seconds the broker
    is stopped, and that the latency lasts."""
    t_start = time.monotonic()
    install_rebootstrap()       # this process's producers and readers live through the faults
    workdir = workdir.resolve()     # workers run in the checkout, not in the caller's folder
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    clients_log = _log_clients_to(logs / "clients.log")
    port, proxy_port, base = embedded.free_port(), embedded.free_port(), _ports(4)
    # Every client goes through the proxy; the broker advertises it.
    raw = {"kafka": {"broker": f"kafka://127.0.0.1:{proxy_port}", "partitions": 6,
                     "processing_guarantee": guarantee,
                     **({"client": client_settings} if client_settings else {})},
           "embedded_broker": {"port": port, "run_dir": str(workdir / "run")},
           "mapping_index": str(workdir / "mapping_index.json"),
           "worker": {"data_dir": str(workdir / "data"), "log_level": "info",
                      "standby_replicas": standby},
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
                         [f.describe() for f in plan], guarantee=guarantee)
    say(f"chaos seed {seed}: {n_events:,} sample events at {rate:,.0f}/s (~{duration:.0f} s), "
        f"standby replicas {standby}, {guarantee}; fault schedule:")
    for f in plan:
        say(f"  {f.describe()}")

    proxy = BrokerProxy(proxy_port, port).start()
    embedded.start(cfg.run_dir, port, advertised_port=proxy_port)
    w = Workers(cfg_path, cfg, base, logs)
    latency_off: threading.Timer | None = None
    try:
        load_items(cfg, sample / "item_feat_dict.json", progress=None)
        for i in WORKER_IDS:
            w.start(i)
        _wait(lambda: all(w.healthy(i) for i in WORKER_IDS), 120, "3 workers healthy", w)
        say(f"{_clock(time.time())} 3 workers healthy, {time.monotonic() - t_start:.1f} s "
            "after the start")
        done = threading.Event()
        produced: dict = {}

        def produce() -> None:
            try:
                produced["n"] = produce_events(cfg, sample / "events.jsonl", rate,
                                               progress=None)[0]
            except BaseException as e:           # reported below, not lost in the thread
                produced["error"] = repr(e)
            finally:
                done.set()

        threading.Thread(target=produce, daemon=True).start()
        t0 = time.monotonic()
        hostile_sent = 0
        for f in plan:
            time.sleep(max(0.0, f.at - (time.monotonic() - t0)))
            note = ""
            if f.kind in ("sigkill", "wipe"):
                victim = cast(int, f.worker)     # the schedule names one for these faults
                w.signal(victim, signal.SIGCONT)
                w.signal(victim, signal.SIGKILL)
                time.sleep(random.Random(seed + int(f.at * 10)).uniform(1, 2))
                if f.kind == "wipe":
                    w.wipe(victim)
                w.start(victim)
            elif f.kind == "sigstop":
                victim = cast(int, f.worker)
                w.signal(victim, signal.SIGSTOP)
                time.sleep(cfg.kafka.client.session_timeout_seconds + 5)
                w.signal(victim, signal.SIGCONT)
            elif f.kind == "reassign":
                w.start(4)
                time.sleep(8)
                w.signal(4, signal.SIGTERM)
            elif f.kind == "hostile":
                hostile_sent = _produce_hostile(cfg, payloads)
                note = f" ({hostile_sent:,} sent)"
            elif f.kind == "broker-pause":
                _pause_broker(cfg.run_dir, broker_pause)
                note = f" ({broker_pause:.0f} s)"
            elif f.kind == "broker-kill":
                pid = embedded.kill(cfg.run_dir)
                time.sleep(random.Random(seed + int(f.at * 10)).uniform(1, 2))
                t_up = time.monotonic()
                embedded.start(cfg.run_dir, port, advertised_port=proxy_port)
                note = f" (pid {pid}; answering {time.monotonic() - t_up:.1f} s after its start)"
            elif f.kind == "broker-restart":
                t_down = time.monotonic()
                embedded.stop(cfg.run_dir)
                embedded.start(cfg.run_dir, port, advertised_port=proxy_port)
                note = f" (down and up in {time.monotonic() - t_down:.1f} s)"
            elif f.kind == "cut":
                note = f" ({proxy.cut_all()} connections)"
            elif f.kind == "latency":
                proxy.set_delay(LATENCY)
                latency_off = threading.Timer(latency_for, proxy.set_delay, (0.0,))
                latency_off.start()
                note = f" ({LATENCY * 1000:.0f} ms each way for {latency_for:.0f} s)"
            report.faults_done.append(f.describe() + note)
            say(f"  {_clock(time.time())} done: {report.faults_done[-1]}")
        if not done.wait(600):
            raise RuntimeError("producing the sample did not finish in 600 s")
        if "error" in produced:
            raise RuntimeError(f"producing the sample failed: {produced['error']}")
        if latency_off is not None:
            latency_off.join()
        say(f"{_clock(time.time())} all produced; waiting for the workers to catch up")
        _wait(lambda: all(w.healthy(i) for i in WORKER_IDS) and _lag_zero(w, cfg), 600,
              "lag 0 on every partition", w, explain=lambda: _stall_report(w))
        say(f"{_clock(time.time())} caught up: lag 0 on every partition")
        sent = payloads if any(f.kind == "hostile" for f in plan) else []
        report = _verify(cfg, w, sample, sent, report, workdir, say)
    except (RuntimeError, WorkerCallError, OSError) as e:
        report.error = str(e)
        say(f"ERROR: {e}")
    finally:
        if latency_off is not None:
            latency_off.cancel()
        w.stop_all()
        report.worker_exits = len(w.exits)
        for exited in w.exits:
            say(f"a worker ended by itself: {exited}")
        embedded.stop(cfg.run_dir)
        proxy.stop()
        client = logging.getLogger("aiokafka")
        client.removeHandler(clients_log)
        client.propagate = True
        clients_log.close()
    report.seconds = time.monotonic() - t_start
    (workdir / "report.json").write_text(json.dumps(report.__dict__, indent=2, default=str))
    return report


def _log_clients_to(path: Path) -> logging.Handler:
    """This process's Kafka clients (the producers, the verdict's readers) log every retry while
    the broker is down: into the run's logs, not onto the terminal."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(name)s: %(message)s"))
    client = logging.getLogger("aiokafka")
    client.addHandler(handler)
    client.propagate = False
    return handler


def _pause_broker(run_dir: Path, seconds: float) -> None:
    pid = embedded.status(run_dir).pid
    if pid is None:
        raise RuntimeError("the embedded broker is not running")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)


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


def _wait(pred, timeout: float, what: str, w: Workers | None = None,
          explain: Callable[[], list[str]] | None = None) -> None:
    """Until pred(); a worker that ends by itself meanwhile ends the wait (it would never come).
    On a timeout the error carries explain()'s lines: a CI run keeps only its output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if w is not None and w.check_exits():
            raise RuntimeError(f"waiting for {what}: a worker ended by itself: {w.exits[0]}")
        if pred():
            return
        time.sleep(1)
    detail = "".join(f"\n  {line}" for line in explain()) if explain is not None else ""
    raise RuntimeError(f"timed out waiting for {what}{detail}")


STALL_FIELDS = ("status", "recovering_partitions", "assigned_partitions", "generation",
                "rebalancing", "rebalances", "membership_confirmed_ago")


def _stall_report(w: Workers, log_lines: int = 12) -> list[str]:
    """What each worker says of itself (health, lag, counts) and the last warnings in its log."""
    out = []
    for i in WORKER_IDS:
        try:
            h = call(w.url(i) + "/health", timeout=5)
            state = ", ".join(f"{k} {h.get(k)}" for k in STALL_FIELDS)
        except (WorkerCallError, ValueError) as e:
            state = f"no health answer ({e})"
        try:
            lag = call(w.url(i) + "/monitor", timeout=5).get("lag")
        except (WorkerCallError, ValueError) as e:
            lag = f"no monitor answer ({e})"
        out.append(f"worker {i}: {state}; lag {lag}")
        try:
            stats = call(w.url(i) + "/stats", timeout=5)
            out.append(f"  stats: counts {stats.get('counts')}; feed_buffered "
                       f"{stats.get('feed_buffered')}; lifecycle {stats.get('lifecycle')}; "
                       f"feed_stale_dropped {stats.get('feed_stale_dropped')}; "
                       f"changelog_restored {stats.get('changelog_restored')}; state_cache "
                       f"{stats.get('state_cache')}")
        except (WorkerCallError, ValueError) as e:
            out.append(f"  no stats answer ({e})")
        log = w.logs / f"worker-{i}-{w.starts.get(i, 1)}.log"
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        warned = [line[:300] for line in lines if "[WARNING]" in line or "[ERROR]" in line]
        out += [f"  {line}" for line in warned[-log_lines:]]
    return out


def _lag_zero(w: Workers, cfg) -> bool:
    seen = {}
    for i in WORKER_IDS:
        try:
            m = call(w.url(i) + "/monitor", timeout=5)
        except Exception:
            return False
        for p, v in m["lag"].items():
            seen[int(p)] = v
    return len(seen) == cfg.kafka.partitions and all(v == 0 for v in seen.values())


def _scan(cfg, topic: str, on_record: Callable[[object], None],
          isolation_level: str = "read_uncommitted") -> None:
    """Every record of `topic` from the start until idle, in log order per partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> None:
        c = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             isolation_level=isolation_level)
        await c.start()
        try:
            parts = c.partitions_for_topic(topic)
            if not parts:
                await refresh_metadata(c)
                parts = c.partitions_for_topic(topic) or ()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            idle = 0
            while idle < 3:
                batch = await c.getmany(timeout_ms=500, max_records=20000)
                idle = 0 if batch else idle + 1
                for recs in batch.values():
                    for r in recs:
                        on_record(r)
        finally:
            await c.stop()
    asyncio.run(run())


class _Regressions:
    """Counts records that went back in time for their key (in log order) and keeps the whole
    history of the keys asked for."""

    def __init__(self, value_of: Callable[[object], int | None], keep: set[bytes],
                 describe: Callable[[object], dict]):
        self.value_of, self.keep, self.describe = value_of, keep, describe
        self.back = 0
        self.best: dict[bytes, int] = {}
        self.best_at: dict[bytes, dict] = {}
        self.history: dict[bytes, list[dict]] = {}
        self.examples: list[dict] = []      # the first regressions, with the record they follow

    def __call__(self, r) -> None:
        if r.key in self.keep:
            self.history.setdefault(r.key, []).append(self._describe(r))
        v = self.value_of(r)
        if v is None:
            return
        best = self.best.get(r.key, -1)
        if v < best:
            self.back += 1
            if len(self.examples) < 5:
                self.examples.append({"key": r.key.decode(errors="replace"),
                                      "record": self._describe(r),
                                      "after": self.best_at[r.key]})
        else:
            self.best[r.key] = v
            if len(self.examples) < 5:
                self.best_at[r.key] = self._describe(r)

    def _describe(self, r) -> dict:
        return {"partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp,
                **self.describe(r)}


def _regressions(cfg, users: Sequence[int] = ()) -> tuple[int, int, int, dict[int, dict]]:
    """Records that went back in time, in log order: what a worker that woke up after losing
    its partitions (SIGSTOP past the session timeout) would leave behind: profile records as a
    read_uncommitted reader sees them, the same as a read_committed one does, changelog states.
    With `users`, also every profile record and changelog state of those users, in log
    order."""
    from features.encoding import StateDecodeError, read_header
    keys = {str(u).encode() for u in users}

    def version(r):
        return orjson.loads(r.value)["version"] if r.value else None

    def record(r) -> dict:
        if not r.value:
            return {"tombstone": True}
        v = orjson.loads(r.value)
        return {k: v.get(k) for k in ("version", "trigger", "as_of", "updated_at", "features")}

    def header(r):
        if not r.value or not r.key[:1].isdigit():
            return None
        try:
            return read_header(r.value)
        except StateDecodeError:
            return None

    def source_offset(r):
        h = header(r)
        return None if h is None else h.source_offset

    def state(r) -> dict:
        h = header(r)
        return {"tombstone": True} if h is None else {
            "source_offset": h.source_offset, "T": h.T, "version": h.version,
            "published_as_of": h.published_as_of, "bytes": len(r.value)}

    published = _Regressions(version, keys, record)
    committed = _Regressions(version, set(), record)
    states = _Regressions(source_offset, keys, state)
    _scan(cfg, cfg.kafka.topics.profile_updates, published)
    _scan(cfg, cfg.kafka.topics.profile_updates, committed, "read_committed")
    _scan(cfg, state_changelog_topic(cfg), states)
    histories = {u: {"profile_updates": published.history.get(str(u).encode(), []),
                     "changelog": states.history.get(str(u).encode(), [])} for u in users}
    for kind, regressions in (("stale publish", published),
                              ("stale publish (read_committed)", committed),
                              ("stale state write", states)):
        for e in regressions.examples:
            print(f"  {kind}: {e}", flush=True)
    return published.back, committed.back, states.back, histories


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


@dataclass(frozen=True)
class GroupView:
    """One consistent assignment: the group's generation, each worker's rebalance count, and
    the worker that owns each partition of user-events."""
    generation: int
    rebalances: tuple[int, ...]
    owners: dict[int, int]


def group_view(w: Workers, cfg) -> GroupView | None:
    """The group as the workers see it now, or None unless it is stable: every worker healthy
    (recovery complete) and not rebalancing, all in one generation, and every partition of
    user-events active on exactly one of them."""
    generations, rebalances, owners = set(), [], {}
    topic = cfg.kafka.topics.user_events
    for i in WORKER_IDS:
        h = ready(w.url(i))
        if h is None or h.get("rebalancing") or "generation" not in h:
            return None
        generations.add(h["generation"])
        rebalances.append(h["rebalances"])
        for tp in h["assigned_partitions"]:
            t, _, part = tp.rpartition(":")
            if t == topic:
                if int(part) in owners:
                    return None
                owners[int(part)] = i
    if len(generations) != 1 or sorted(owners) != list(range(cfg.kafka.partitions)):
        return None
    return GroupView(generations.pop(), tuple(rebalances), dict(sorted(owners.items())))


def _wait_stable(w: Workers, cfg, timeout: float = 300) -> GroupView:
    deadline = time.monotonic() + timeout
    while True:
        view = group_view(w, cfg)
        if view is not None:
            return view
        if time.monotonic() > deadline:
            raise RuntimeError(f"no stable consumer group within {timeout:.0f} s")
        time.sleep(1)


def _ask_states(w: Workers, ids: list[int]) -> dict[int, dict]:
    """Every worker's answer for `ids` (each answers for its active partitions only)."""
    live: dict[int, dict] = {}
    for i in WORKER_IDS:
        for k in range(0, len(ids), 1000):
            chunk = ",".join(map(str, ids[k:k + 1000]))
            got = call(f"{w.url(i)}/states?ids={chunk}", timeout=30)
            live.update({int(u): s for u, s in got.items() if s is not None})
    return live


def stable_states(w: Workers, ids: list[int], cfg, say,
                   timeout: float = 300) -> tuple[dict[int, dict], GroupView, float]:
    """Every user's state summary, read while the group stays in one stable generation: the
    read is repeated until the group view is the same before and after it. Users no worker
    had are asked once more within the same read. Returns (states, view, read start)."""
    deadline = time.monotonic() + timeout
    while True:
        before = _wait_stable(w, cfg, max(1.0, deadline - time.monotonic()))
        started = time.time()
        try:
            live = _ask_states(w, ids)
            again = [u for u in ids if u not in live]
            if again:
                live.update(_ask_states(w, again))
        except WorkerCallError as e:
            say(f"reading states failed ({e}); again")
            live = None
        after = group_view(w, cfg)
        if live is not None and after == before:
            return live, before, started
        say(f"the group changed during the states read ({before} -> {after}); reading again")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no states read in a stable group within {timeout:.0f} s")


def _count_states(states: dict, live: dict[int, dict], report: ChaosReport) -> None:
    """Lost and double-applied events, per user and day, of the live states against the
    batch path's."""
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
    view = _wait_stable(w, cfg)
    say(f"{_clock(time.time())} stable group: generation {view.generation}, partition owners "
        f"{view.owners}")
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
    ids = sorted(states)
    live, view, t0 = stable_states(w, ids, cfg, say)
    say(f"states read in a stable group ({_clock(t0)}-{_clock(time.time())}, generation "
        f"{view.generation}, partition owners {view.owners})")
    _count_states(states, live, report)
    wrong = [uid for uid, _, _ in c.mismatched[:10]]
    report.stale_publishes, report.stale_committed, report.stale_state_writes, histories = \
        _regressions(cfg, wrong)
    for uid, got, want in c.mismatched[:10]:
        report.examples.append({"user_id": uid, "published": got, "expected": want,
                                **histories[uid]})
    if c.mismatched:
        # the whole record history of each mismatched user, for the post-mortem
        (workdir / "mismatched.json").write_bytes(orjson.dumps(report.examples[-len(wrong):],
                                                               option=orjson.OPT_INDENT_2))
        say(f"mismatched users' records and states: {workdir / 'mismatched.json'}")
    return report
