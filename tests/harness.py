"""Real parts for integration tests: an embedded broker per test and worker processes."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import orjson
import yaml
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy import broker as embedded
from deploy import worker_process
from deploy.worker_process import worker_argv
from features.config import NO_SCHEDULED_RUNS
from features.runtime import FeatureRuntime
from offline.batch_io import BatchReport
from reference.batch import build_states
from streams.io.kafka_security import client_kwargs, librdkafka_settings
from streams.io.transactions import OpenTransactions
from tools.data.sample import write_click_events
from tools.topic_reads import events_acked, read_topic
from tools.topic_reads import topic_partitions as _topic_partitions

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class Broker:
    port: int
    run_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def write_config(path: Path, broker: Broker, **sections) -> Path:
    """A config pointing at the test broker; `sections` are merged over it."""
    raw = {
        "kafka": {"broker": f"kafka://{broker.bootstrap}", "partitions": 4},
        "embedded_broker": {"port": broker.port, "run_dir": str(broker.run_dir)},
        "worker": {"data_dir": str(path.parent / "data"), "log_level": "info"},
        # runs are triggered by the tests that test them (profiles job), never by the clock
        "scheduled_update": dict(NO_SCHEDULED_RUNS),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def http_answer(url: str, timeout: float = 2.0, token: str | None = None
                ) -> tuple[int, dict, Message]:
    """(status, JSON body, headers) of a GET, error statuses included."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                 if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), e.headers


def http_json(url: str, timeout: float = 2.0, token: str | None = None) -> tuple[int, dict]:
    status, body, _ = http_answer(url, timeout, token)
    return status, body


@dataclass
class WorkerProcess(worker_process.WorkerProcess):
    """One real worker process (`python -m <module> ...`) run from the repository root, its
    log kept in the test's folder; a test fails with the log's tail when it does not start."""
    cwd: Path | None = ROOT

    def wait_healthy(self, timeout: float = 90.0) -> dict:
        """Its /health once it is ok, recovered and owns partitions; else AssertionError."""
        last: list[dict] = []

        def owns_partitions(url: str) -> dict | None:
            try:
                status, body = http_json(url + "/health")
            except (OSError, ValueError):
                return None
            last[:] = [body]
            return body if status == 200 and body.get("recovery_completed") and \
                body.get("assigned_partitions") else None

        body = super().wait_healthy(timeout, owns_partitions, interval=0.05)
        if body is not None:
            return body
        if not self.alive():
            raise AssertionError(f"worker exited with {self.returncode}; log:\n{self.tail()}")
        raise AssertionError(f"worker not healthy in {timeout}s (last {last[0] if last else None});"
                             f" log:\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.signal(sig)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def owned_partitions(worker) -> list[int]:
    """The user-events partitions the worker has active (empty while it has no answer)."""
    try:
        status, health = http_json(worker.url("/health"))
    except (OSError, ValueError):
        return []
    if status != 200:
        return []
    return sorted(int(p.split(":")[1]) for p in health.get("assigned_partitions", [])
                  if p.startswith("user-events:"))


def keep_artifacts(name: str, folder: Path) -> Path:
    """Copy a failed test's logs to test-artifacts/<name>/."""
    dest = ARTIFACTS / name
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("*.sst", "*.ldb", "LOCK"),
                    dirs_exist_ok=True)
    return dest


def start_broker(run_dir: Path) -> Broker:
    port = embedded.free_port()
    embedded.start(run_dir, port, timeout=20)
    return Broker(port, run_dir)


def profile_worker(workers, cfg_path: Path, instance_id: int, web_port: int, name: str):
    """A real `profiles worker` process (not started)."""
    return workers(worker_argv(cfg_path, instance_id, web_port), web_port, name)


def two_free_ports() -> int:
    """A free port whose next one is free too (workers 1 and 2 on web_port and web_port + 1)."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            try:
                b.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
            return p
    raise RuntimeError("no two consecutive free ports")


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create `topic` (replication 1) with aiokafka's admin client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll until predicate() returns a truthy value; returns it (or the last falsy one). A
    predicate that cannot reach a worker (OSError: connection refused, a timeout) counts as not
    yet: a worker restarts in place after a failed delivery, its HTTP port closed meanwhile
    (kafka.client.delivery_timeout_seconds); one that stays away fails at the deadline.
    Between two calls it sleeps `interval`, or as long as the call took when that was longer:
    an expensive predicate (a whole topic read, a batch-path run) then takes at most half of
    a core from the workers it waits for."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            result = predicate()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(max(interval, time.monotonic() - began))
    return result


def topic_values(cfg, topic: str) -> list[dict]:
    """The JSON values of read_topic, in order per partition."""
    return [orjson.loads(r.value) for r in read_topic(cfg, topic)]


def latest_values(cfg, topic: str) -> dict[bytes, dict]:
    """The last JSON value per key of read_topic (a compacted topic's current values)."""
    return {r.key: orjson.loads(r.value) for r in read_topic(cfg, topic)}


def topic_size(cfg, topic: str, partitions: list[int] | None = None) -> int:
    """Records in `topic` (in `partitions` of it, when given) a read_committed reader sees, 0
    when it does not exist. Without transactions that is the sum of the partitions' end
    offsets (nothing is deleted in a test: compaction keeps offsets), read at once; with them,
    markers and aborted records take offsets too, and the records are counted."""
    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                                    **client_kwargs(cfg), group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [tp for tp in await _topic_partitions(consumer, topic)
                   if partitions is None or tp.partition in partitions]
            return sum((await consumer.end_offsets(tps)).values()) if tps else 0
        finally:
            await consumer.stop()
    if not cfg.kafka.exactly_once:
        return asyncio.run(run())
    return sum(1 for r in read_topic(cfg, topic)
               if partitions is None or r.partition in partitions)


def outputs_delivered(cfg, ws, token: str | None = None) -> bool:
    """Every record the workers `ws` have made is in its topic: no worker holds a dirty user
    (events computed, their profiles not yet made), and the profile records, closed days and
    dead letters they counted (streams.monitoring.counters, counted when made) are as many as their
    topics hold. Exact when `ws` are every process that wrote those topics since they were
    created, none restarted (a restart starts its counts again) and no hold-back. `token`:
    the API token, with worker.auth: all."""
    stats = [http_json(w.url("/stats"), token=token)[1] for w in ws]
    if any(s["state_cache"]["dirty"] for s in stats):
        return False
    made = {cfg.kafka.topics.profile_updates: "published",
            cfg.kafka.topics.profile_aggregates: "aggregates"}
    for topic, count in made.items():
        if sum(s["counts"].get(count, 0) for s in stats) != topic_size(cfg, topic):
            return False
    dead = sum(v for s in stats for k, v in s["counts"].items() if k.startswith("dlq_"))
    return dead == topic_size(cfg, cfg.kafka.topics.dlq)


def wait_delivered(cfg, ws, timeout: float = 60, token: str | None = None) -> None:
    """Wait until outputs_delivered(cfg, ws, token); AssertionError naming the counts if it
    does not come."""
    if not wait_for(lambda: outputs_delivered(cfg, ws, token), timeout,
                    what="outputs delivered"):
        stats = [http_json(w.url("/stats"), token=token)[1] for w in ws]
        topics = cfg.kafka.topics
        sizes = {t: topic_size(cfg, t) for t in (topics.profile_updates,
                                                  topics.profile_aggregates, topics.dlq)}
        raise AssertionError(f"the workers' outputs did not all reach their topics in "
                             f"{timeout:.0f} s: topics hold {sizes}, the workers counted "
                             f"{[s['counts'] for s in stats]}, dirty "
                             f"{[s['state_cache']['dirty'] for s in stats]}")


def transactions_settled(cfg) -> bool:
    """No transaction is open on the state changelog or the output topics. A commit returns
    once its transaction is decided, and the broker writes its markers after that: until then
    a read_committed reader stops short of it (exactly_once_v2)."""
    from streams.pipeline.topology import state_changelog_topic
    t = cfg.kafka.topics
    tps = [(topic, p) for topic in (state_changelog_topic(cfg), t.profile_updates,
                                    t.profile_aggregates, t.dlq)
           for p in range(cfg.kafka.partitions)]
    return not OpenTransactions({"bootstrap.servers": cfg.kafka.bootstrap_servers,
                                 **librdkafka_settings(cfg)}, 0).open(tps)


def caught_up(cfg, timeout: float = 60) -> None:
    """Wait until events_acked(cfg), and under exactly_once_v2 transactions_settled(cfg)."""
    assert wait_for(lambda: events_acked(cfg), timeout, interval=0.25,
                    what="user-events committed to their end"), \
        "the group's commits did not reach the end of user-events"
    if cfg.kafka.exactly_once:
        assert wait_for(lambda: transactions_settled(cfg), timeout, interval=0.1,
                        what="no transaction open on the changelog and the outputs")


def profiles_cli(cfg_path: Path, *args: str, timeout: float = 300,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`profiles --config cfg_path ARGS...` as a user runs it; prints what it printed."""
    r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg_path), *args],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env={**os.environ, **(env or {})})
    print(f"$ profiles {' '.join(args)}  (exit {r.returncode})\n{r.stdout}{r.stderr}")
    return r


def split_sample(tmp_path: Path, spec) -> tuple[Path, Path, Path, Path]:
    """A sample (tools.data.sample) in tmp_path/sample: its folder, its whole event log, and
    that log split into its first two thirds and the rest (first.jsonl, rest.jsonl)."""
    from tools.data.sample import write_sample
    sample = tmp_path / "sample"
    write_sample(spec, sample)
    every = sample / "events.jsonl"
    lines = every.read_bytes().splitlines(keepends=True)
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    first.write_bytes(b"".join(lines[:len(lines) * 2 // 3]))
    rest.write_bytes(b"".join(lines[len(lines) * 2 // 3:]))
    return sample, every, first, rest


write_events = write_click_events


def state_diffs(cfg, worker, events: Path, ids: list[int]) -> dict:
    """Users whose live state summary differs from the batch path's state on `events`."""
    with open(events, "rb") as f:
        want = build_states(FeatureRuntime.from_config(cfg), f, BatchReport())
    status, live = http_json(worker.url("/states?ids=" + ",".join(map(str, ids))), timeout=10)
    assert status == 200, live
    diffs = {}
    for uid in ids:
        st, have = want.get(uid), live.get(str(uid))
        expect = None if st is None else {"T": st.T, "event_ids": len(st.event_ids),
                                          "days": {str(d): b.total for d, b in st.days.items()}}
        got = None if have is None else {k: have[k] for k in ("T", "event_ids", "days")}
        if got != expect:
            diffs[uid] = (got, expect)
    return diffs


def published_vs_batch(cfg, events: Path, out: Path, items: Path | None = None):
    """Every user's latest `profile-updates` record against the batch path on `events` (and
    the item catalog `items`, when the workers had one) (tools.verify.Comparison: .ok,
    .summary(), .mismatched)."""
    from tools.verify import batch_profiles, compare
    expected = batch_profiles(cfg, items, events, out)
    caught_up(cfg)              # every event's records delivered (restarts in place included)
    published = {int(k): v for k, v in latest_values(cfg, cfg.kafka.topics.profile_updates)
                 .items()}
    return compare(published, expected)
