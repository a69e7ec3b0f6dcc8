"""`python -m tools.bench.fencing`: what the workers' timer fencing (streams.pipeline.fencing) still
saves under `kafka.processing_guarantee: exactly_once_v2`, where the broker aborts a zombie's
transaction anyway.

Per mode (worker A's PROFILES_FENCING on, then off) and run, on a fresh embedded broker (2
partitions, session timeout 6 s, heartbeat 1 s, batch_size 200, no scheduled runs): worker A
takes events offered at ~2,000/s and is SIGSTOPped while one of its commits' transactions is
open on profile-updates (as tests/integration/test_exactly_once.py's frozen-worker test does).
With `--freeze closed` A is stopped at a moment none of its transactions is open instead
(between two commits, with fetched events in hand). Worker B starts, takes both partitions,
and the stream is caught up; then A gets SIGCONT. Recorded:
- seconds from SIGCONT until A is ready (recovered) with one partition again and B with the
  other, held for STABLE seconds (a thawed worker can show its old assignment for a moment
  before it restarts in place), and whether its process restarted (/health started_at);
- A's log after the thaw: restarts in place, failed deliveries, transaction exceptions, the
  fence's lines; its counters;
- the records of profile-updates and of the state changelog that a read_uncommitted reader
  sees and a read_committed one does not (aborted), in all and past the high watermark at the
  freeze;
- whether every user's latest read_committed profile equals the batch path's.
Figures only: nothing is asserted.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import signal
import statistics
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import orjson
import yaml

from deploy import broker as embedded
from deploy.clients import produce_events
from deploy.worker_process import WorkerProcess, worker_argv
from deploy.workers import WorkerCallError, call, ready
from features.config import NO_SCHEDULED_RUNS, ProfileConfig, load_config
from streams.io.kafka_security import client_kwargs, librdkafka_settings
from streams.io.transactions import OpenTransactions
from streams.pipeline.topology import state_changelog_topic
from tools.data.sample import write_click_events
from tools.topic_reads import events_acked, read_topic

ROOT = Path(__file__).resolve().parents[2]
MODES = ("on", "off")
PARTITIONS = 2
USERS, EVENTS_PER_USER, RATE = 2000, 10, 2000
CLIENT = {"session_timeout_seconds": 6, "heartbeat_interval_seconds": 1}
STABLE = 5.0        # seconds A must stay back (a restart in place after the thaw ends a stretch)
FREEZES = ("open", "closed")    # A stopped with a transaction of its open, or with none
# lines of worker A's log after the thaw that are counted (substring -> column)
LOG_PATTERNS = {
    "restarts_in_place": "restarting in place",                 # streams/web/restart.py
    "delivery_failures": "delivering a checkpoint failed",      # streams/pipeline/lifecycle.py
    "txn_aborted": "TransactionAborted:",                       # streams/io/transactions.py
    "txn_fenced": "TransactionFenced:",
    "fence_lines": "outputs dropped until it rejoins",          # streams/pipeline/fencing.py
}


@dataclass
class FencingRun:
    mode: str                           # worker A's PROFILES_FENCING
    run: int
    open_at_freeze: bool = False        # a transaction of A's was seen open when it was stopped
    frozen_seconds: float = 0.0         # SIGSTOP -> SIGCONT
    b_owns_seconds: float | None = None     # SIGSTOP -> B owns both partitions
    back_seconds: float | None = None   # SIGCONT -> A ready with one partition, B the other,
    #                                     held STABLE seconds (from the start of that stretch)
    restarted: bool | None = None       # A's /health started_at changed across the thaw
    restarts_in_place: int = 0
    delivery_failures: int = 0
    txn_aborted: int = 0
    txn_fenced: int = 0
    fence_lines: int = 0
    fenced_events: int | None = None    # A's /stats once back (reset by a restart in place)
    dropped_batches: int | None = None  # ... rebalance_dropped_batches: taken before a rebalance
    aborted_updates: int = 0            # profile-updates records read_uncommitted only
    aborted_updates_after: int = 0      # ... of them past the high watermark at the freeze
    aborted_changelog: int = 0          # the same on the state changelog
    aborted_changelog_after: int = 0
    exact: bool | None = None
    comparison: str = ""
    error: str | None = None

    NUMERIC = ("frozen_seconds", "b_owns_seconds", "back_seconds", "restarts_in_place",
               "delivery_failures", "txn_aborted", "txn_fenced", "fence_lines",
               "fenced_events", "dropped_batches", "aborted_updates", "aborted_updates_after",
               "aborted_changelog", "aborted_changelog_after")


# ------------------------------------------------------------------------- summary (pure)

COLUMNS = (("run", "run"), ("open txn at freeze", "open_at_freeze"),
           ("frozen s", "frozen_seconds"), ("B owns s", "b_owns_seconds"),
           ("s to A back", "back_seconds"), ("A restarted", "restarted"),
           ("restarts in place", "restarts_in_place"),
           ("delivery failures", "delivery_failures"), ("TransactionAborted", "txn_aborted"),
           ("TransactionFenced", "txn_fenced"), ("fence lines", "fence_lines"),
           ("fenced events", "fenced_events"), ("rebalance-dropped batches", "dropped_batches"),
           ("aborted updates (after freeze)", "aborted_updates"),
           ("aborted changelog (after freeze)", "aborted_changelog"), ("exact", "exact"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def median_of(runs: list[FencingRun]) -> dict[str, Any]:
    """Per numeric field the median over the runs that have it (None: none has); booleans as
    'k/n'; errors counted."""
    ok = [r for r in runs if r.error is None]
    out: dict[str, Any] = {"runs": len(runs), "failed": len(runs) - len(ok)}
    for name in FencingRun.NUMERIC:
        values = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        out[name] = statistics.median(values) if values else None
    for name in ("open_at_freeze", "restarted", "exact"):
        out[name] = f"{sum(1 for r in ok if getattr(r, name))}/{len(ok)}"
    return out


def _row(label: str, get: Callable[[str], Any]) -> str:
    cells = []
    for _, name in COLUMNS:
        if name == "run":
            cells.append(label)
        elif name in ("aborted_updates", "aborted_changelog"):
            cells.append(f"{_cell(get(name))} ({_cell(get(name + '_after'))})")
        else:
            cells.append(_cell(get(name)))
    return "| " + " | ".join(cells) + " |"


def mode_table(mode: str, runs: list[FencingRun], freeze: str = "open") -> list[str]:
    """Markdown: one row per run of the mode, then the medians."""
    lines = [f"PROFILES_FENCING={mode} (worker A), frozen with transactions {freeze}", "",
             "| " + " | ".join(h for h, _ in COLUMNS) + " |",
             "|" + "---:|" * len(COLUMNS)]
    for r in runs:
        if r.error is not None:
            lines.append(f"| {r.run} | failed: {r.error.splitlines()[0][:120]} |")
        else:
            lines.append(_row(str(r.run), lambda name, r=r: getattr(r, name)))
    med = median_of(runs)
    lines.append(_row("median", lambda name: med.get(name)))
    return lines


def count_log_lines(text: str) -> dict[str, int]:
    """LOG_PATTERNS' counts in a log's text."""
    lines = text.splitlines()
    return {name: sum(1 for line in lines if pattern in line)
            for name, pattern in LOG_PATTERNS.items()}


def aborted(uncommitted: set[tuple[int, int]], committed: set[tuple[int, int]],
            high_at_freeze: dict[int, int]) -> tuple[int, int]:
    """(records seen only read_uncommitted, those of them at or past the partition's high
    watermark at the freeze)."""
    gone = uncommitted - committed
    return len(gone), sum(1 for p, o in gone if o >= high_at_freeze.get(p, 0))


# ------------------------------------------------------------------------- the broker's view

def _consumer(cfg: ProfileConfig, **kwargs: Any) -> Any:
    from aiokafka import AIOKafkaConsumer
    return AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                            **client_kwargs(cfg), enable_auto_commit=False, **kwargs)


def _tps(topic: str) -> list[Any]:
    from aiokafka import TopicPartition
    return [TopicPartition(topic, p) for p in range(PARTITIONS)]


def high_watermarks(cfg: ProfileConfig, topic: str) -> dict[int, int]:
    async def run() -> dict[int, int]:
        c = _consumer(cfg, group_id=None, isolation_level="read_uncommitted")
        await c.start()
        try:
            return {tp.partition: o for tp, o in (await c.end_offsets(_tps(topic))).items()}
        finally:
            await c.stop()
    return asyncio.run(run())


def _wait(pred: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = pred()
        except (OSError, WorkerCallError):
            got = None
        if got or time.monotonic() > deadline:
            return got
        time.sleep(interval)


def _stable(pred: Callable[[], Any], hold: float, timeout: float) -> float | None:
    """The monotonic time from which pred() held for `hold` seconds on end (polled every 0.1
    s), None when that did not happen within `timeout`."""
    deadline = time.monotonic() + timeout
    since: float | None = None
    while time.monotonic() < deadline:
        now = time.monotonic()
        try:
            ok = pred()
        except (OSError, WorkerCallError):
            ok = False
        if not ok:
            since = None
        elif since is None:
            since = now
        elif now - since >= hold:
            return since
        time.sleep(0.1)
    return None


def caught_up(cfg: ProfileConfig, open_txns: OpenTransactions, timeout: float = 120) -> None:
    if not _wait(lambda: events_acked(cfg), timeout):
        raise TimeoutError("the group's commits did not reach the end of user-events")
    t = cfg.kafka.topics
    tps = [(topic, p) for topic in (state_changelog_topic(cfg), t.profile_updates,
                                    t.profile_aggregates, t.dlq) for p in range(PARTITIONS)]
    if not _wait(lambda: not open_txns.open(tps), timeout, 0.1):
        raise TimeoutError("transactions still open on the changelog and the outputs")


def _open(open_txns: OpenTransactions, tps: list[tuple[str, int]]) -> dict:
    """open_txns.open(tps), {} while the broker cannot say (a topic not there yet)."""
    try:
        return open_txns.open(tps)
    except Exception:       # noqa: BLE001 - confluent_kafka's KafkaException and the like
        return {}


def owned(w: WorkerProcess, topic: str, need_ready: bool = False) -> list[int] | None:
    """The user-events partitions the worker has (its /health answers 200; `need_ready`: and
    says ok with recovery complete)."""
    try:
        h = ready(w.url()) if need_ready else call(w.url("/health"), timeout=2)
    except (WorkerCallError, ValueError):
        return None
    if h is None:
        return None
    return sorted(int(p.rsplit(":", 1)[1]) for p in h.get("assigned_partitions", [])
                  if p.startswith(topic + ":"))


# ------------------------------------------------------------------------- one run

def _config(run_dir: Path, port: int, app_id: str) -> Path:
    raw = {"kafka": {"broker": f"kafka://127.0.0.1:{port}", "partitions": PARTITIONS,
                     "processing_guarantee": "exactly_once_v2", "client": dict(CLIENT)},
           "embedded_broker": {"port": port, "run_dir": str(run_dir / "broker-run")},
           "worker": {"app_id": app_id, "data_dir": str(run_dir / "data"),
                      "log_level": "info"},
           "real_time_update": {"batch_size": 200},
           "scheduled_update": dict(NO_SCHEDULED_RUNS)}
    path = run_dir / "cfg.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_once(mode: str, run: int, run_dir: Path, say: Callable[[str], None],
             started: list[WorkerProcess], freeze: str = "open") -> FencingRun:
    """One freeze and thaw; the workers it starts are appended to `started` (the caller ends
    them); the broker is ended here."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    out = FencingRun(mode, run)
    port = embedded.free_port()
    cfg_path = _config(run_dir, port, f"fencing-{mode}-{run}")
    cfg = load_config(cfg_path, env={})
    updates, changelog = cfg.kafka.topics.profile_updates, state_changelog_topic(cfg)
    events_topic = cfg.kafka.topics.user_events
    events = write_click_events(run_dir / "events.jsonl", range(1, USERS + 1),
                          int(time.time()) - 3 * 86400, EVENTS_PER_USER)
    open_txns = OpenTransactions({"bootstrap.servers": cfg.kafka.bootstrap_servers,
                                  **librdkafka_settings(cfg)}, 0)
    broker_run = cfg.run_dir
    embedded.start(broker_run, port, timeout=30)
    producing: threading.Thread | None = None
    try:
        say(f"[{mode} #{run}] broker on {port}; starting worker A (PROFILES_FENCING={mode})")
        port_a, port_b = embedded.free_port(), embedded.free_port()
        a = WorkerProcess(worker_argv(cfg_path, 1, port_a), run_dir / "a.log", port_a,
                          env={"PROFILES_FENCING": mode}, cwd=ROOT)
        started.append(a.start())
        if not _wait(lambda: owned(a, events_topic, need_ready=True), 120, 0.1):
            raise TimeoutError("worker A did not become ready with partitions")
        first_start = (ready(a.url()) or {}).get("started_at")
        say(f"[{mode} #{run}] A ready; producing {USERS * EVENTS_PER_USER:,} events at "
            f"{RATE:,}/s")
        producing = threading.Thread(target=produce_events, args=(cfg, events),
                                     kwargs={"rate": RATE, "progress": None}, daemon=True)
        producing.start()
        update_tps = [(updates, p) for p in range(PARTITIONS)]
        # "open": stopped while a transaction of its holds records on the broker (seen open,
        # stopped, still open half a second later); "closed": while it processes, none open
        want_open = freeze == "open"
        busy_from = time.monotonic() + 2.0      # ("closed": A has fetched events in hand)
        frozen = False
        while producing.is_alive() and not frozen:
            if not want_open and time.monotonic() < busy_from:
                time.sleep(0.05)
                continue
            if bool(_open(open_txns, update_tps)) == want_open:
                a.signal(signal.SIGSTOP)
                t_stop = time.monotonic()
                time.sleep(0.5)
                if bool(_open(open_txns, update_tps)) == want_open:
                    frozen = True
                    out.open_at_freeze = want_open
                else:
                    a.signal(signal.SIGCONT)
        if not frozen:
            say(f"[{mode} #{run}] no moment with A's transactions {freeze} seen: stopping it "
                "anyway")
            a.signal(signal.SIGSTOP)
            t_stop = time.monotonic()
            out.open_at_freeze = bool(_open(open_txns, update_tps))
        high_updates = high_watermarks(cfg, updates)
        high_changelog = high_watermarks(cfg, changelog)
        say(f"[{mode} #{run}] A stopped (open transaction: {out.open_at_freeze}); high "
            f"watermarks of {updates} {high_updates}; starting worker B")
        b = WorkerProcess(worker_argv(cfg_path, 2, port_b), run_dir / "b.log", port_b, cwd=ROOT)
        started.append(b.start())
        try:
            if not _wait(lambda: owned(b, events_topic) == list(range(PARTITIONS)), 90):
                raise TimeoutError("worker B did not take every partition")
            out.b_owns_seconds = time.monotonic() - t_stop
            say(f"[{mode} #{run}] B owns both partitions {out.b_owns_seconds:.1f} s after "
                "the stop; waiting for the end of the stream")
            producing.join(300)
            caught_up(cfg, open_txns)
        finally:
            log_from = a.log_path.stat().st_size if a.log_path.exists() else 0
            a.signal(signal.SIGCONT)
            t_cont = time.monotonic()
        out.frozen_seconds = t_cont - t_stop
        say(f"[{mode} #{run}] caught up; SIGCONT to A after {out.frozen_seconds:.1f} s frozen")

        def back() -> bool:
            if not a.alive():
                raise RuntimeError(f"worker A exited with {a.returncode}")
            h = ready(a.url())
            if h is None or h.get("rebalancing"):
                return False
            mine = sorted(int(p.rsplit(":", 1)[1]) for p in h.get("assigned_partitions", [])
                          if p.startswith(events_topic + ":"))
            theirs = owned(b, events_topic)
            return bool(mine and theirs and len(mine) == len(theirs) == 1 and mine != theirs)
        stretch = _stable(back, STABLE, 180)
        if stretch is not None:
            out.back_seconds = stretch - t_cont
            say(f"[{mode} #{run}] A ready with one partition {out.back_seconds:.1f} s after "
                f"SIGCONT (and for {STABLE:.0f} s on)")
        else:
            say(f"[{mode} #{run}] A not back with one partition within 180 s")
        last_start = (ready(a.url()) or {}).get("started_at")
        if first_start is not None and last_start is not None:
            out.restarted = last_start != first_start
        caught_up(cfg, open_txns)
        try:
            counts = call(a.url("/stats"), timeout=5)["counts"]
            out.fenced_events = int(counts.get("fenced_events", 0))
            out.dropped_batches = int(counts.get("rebalance_dropped_batches", 0))
        except (WorkerCallError, ValueError, KeyError):
            pass
        with open(a.log_path, "rb") as f:
            f.seek(log_from)
            for name, n in count_log_lines(f.read().decode("utf-8", "replace")).items():
                setattr(out, name, n)

        latest: dict[int, dict] = {}
        for topic, high, total_field in ((updates, high_updates, "aborted_updates"),
                                          (changelog, high_changelog, "aborted_changelog")):
            seen = {(r.partition, r.offset) for r in read_topic(cfg, topic, "read_uncommitted")}
            committed_records = read_topic(cfg, topic, "read_committed")
            committed = {(r.partition, r.offset) for r in committed_records}
            n, after = aborted(seen, committed, high)
            setattr(out, total_field, n)
            setattr(out, total_field + "_after", after)
            if topic == updates:
                latest = {int(r.key): orjson.loads(r.value) for r in committed_records}
        from tools.verify import batch_profiles, compare
        c = compare(latest, batch_profiles(cfg, None, events, run_dir / "batch.jsonl"))
        out.exact, out.comparison = c.ok, c.summary()
        say(f"[{mode} #{run}] restarts in place {out.restarts_in_place}, delivery failures "
            f"{out.delivery_failures}, fence lines {out.fence_lines}; aborted profile-updates "
            f"{out.aborted_updates} ({out.aborted_updates_after} after the freeze); "
            f"{c.summary()}")
        return out
    finally:
        for w in started:
            if w.alive():
                w.signal(signal.SIGKILL)        # (a stopped process is killed as well)
        started.clear()
        if producing is not None:
            producing.join(30)
        del open_txns       # its librdkafka admin client would go on calling the gone broker
        embedded.kill(broker_run)
        if embedded.status(broker_run).running:
            embedded.stop(broker_run, grace=10)


# ------------------------------------------------------------------------- command

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.fencing", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("run/bench-fencing"))
    ap.add_argument("--freeze", choices=FREEZES, default="open",
                    help="stop A with a transaction of its open (default), or with none")
    args = ap.parse_args(argv)
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()

    def say(msg: str) -> None:
        print(f"{time.monotonic() - began:7.1f}s {msg}", flush=True)

    def on_term(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)      # the finally blocks end the workers and the broker
    signal.signal(signal.SIGTERM, on_term)

    results: dict[str, list[FencingRun]] = {m: [] for m in MODES}
    started: list[WorkerProcess] = []
    try:
        for run in range(1, args.runs + 1):
            for mode in MODES:              # interleaved: a machine that slows weighs on both
                try:
                    r = run_once(mode, run, workdir / f"{mode}-{run}", say, started,
                                 args.freeze)
                except Exception as e:      # noqa: BLE001 - recorded, the next run goes on
                    traceback.print_exc()
                    r = FencingRun(mode, run, error=f"{type(e).__name__}: {e}")
                    say(f"[{mode} #{run}] failed: {r.error} (logs in {workdir / f'{mode}-{run}'})")
                gc.collect()    # a failed run's clients (held by its traceback) go now
                results[mode].append(r)
                _write(workdir, results, args.runs, args.freeze)
    finally:
        for w in started:
            if w.alive():
                w.signal(signal.SIGKILL)
    print()
    for mode in MODES:
        print("\n".join(mode_table(mode, results[mode], args.freeze)))
        print()
    print(f"written: {workdir / 'fencing.json'}")
    return 0


def _write(workdir: Path, results: dict[str, list[FencingRun]], runs: int,
           freeze: str) -> None:
    doc = {"setup": {"partitions": PARTITIONS, "users": USERS,
                     "events_per_user": EVENTS_PER_USER, "rate": RATE, "client": CLIENT,
                     "processing_guarantee": "exactly_once_v2", "batch_size": 200,
                     "runs": runs, "freeze": freeze, "stable_seconds": STABLE,
                     "log_patterns": LOG_PATTERNS},
           "modes": {m: {"runs": [asdict(r) for r in rs], "median": median_of(rs)}
                     for m, rs in results.items()}}
    (workdir / "fencing.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
