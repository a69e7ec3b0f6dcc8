"""Real parts for integration tests: an embedded broker per test and worker processes."""
from __future__ import annotations

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
from pathlib import Path

import orjson
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy import broker as embedded
from deploy import worker_process
from deploy.worker_process import worker_argv
from features.batch import BatchReport, build_states
from features.config import NO_SCHEDULED_RUNS
from features.runtime import FeatureRuntime

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


def http_json(url: str, timeout: float = 2.0, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                 if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


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

        body = super().wait_healthy(timeout, owns_partitions)
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


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll until predicate() returns a truthy value; returns it (or the last falsy one). A
    predicate that cannot reach a worker (OSError: connection refused, a timeout) counts as not
    yet: a worker restarts in place after a failed delivery, its HTTP port closed meanwhile
    (kafka.client.delivery_timeout_seconds); one that stays away fails at the deadline."""
    deadline = time.monotonic() + timeout
    result = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(interval)
    return result


def profiles_cli(cfg_path: Path, *args: str, timeout: float = 300,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`profiles --config cfg_path ARGS...` as a user runs it; prints what it printed."""
    r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg_path), *args],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env={**os.environ, **(env or {})})
    print(f"$ profiles {' '.join(args)}  (exit {r.returncode})\n{r.stdout}{r.stderr}")
    return r


def write_events(path: Path, users: range, base_ts: int, per_user: int) -> Path:
    path.write_bytes(b"".join(
        orjson.dumps({"user_id": u, "item_id": 100 + (u * 7 + i) % 50,
                      "timestamp": base_ts + i * 600 + u, "event_type": "click",
                      "event_id": f"{base_ts}-{u}-{i}"}) + b"\n"
        for u in users for i in range(per_user)))
    return path


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


def published_vs_batch(cfg, events: Path, out: Path):
    """Every user's latest `profile-updates` record against the batch path on `events`
    (tools.verify.Comparison: .ok, .summary(), .mismatched)."""
    from deploy.clients import latest_by_key
    from tools.verify import batch_profiles, compare
    expected = batch_profiles(cfg, None, events, out)
    published = {int(k): v for k, v in latest_by_key(cfg, cfg.kafka.topics.profile_updates).items()}
    return compare(published, expected)
