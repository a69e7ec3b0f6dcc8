"""Third-party clients both ways: events produced with confluent-kafka (librdkafka) and with
kafkajs (npm) are processed, and both read profile-updates."""
from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import confluent_kafka as ck
import orjson
import pytest

from deploy.broker import free_port
from features.config import load_config
from tests.harness import profile_worker, write_config

pytestmark = pytest.mark.integration
JS = Path(__file__).resolve().parents[1] / "js"


def events_for(users: range, base_ts: int) -> list[bytes]:
    return [orjson.dumps({"user_id": u, "item_id": 100 + i, "timestamp": base_ts + i * 60,
                          "event_type": "click", "event_id": f"{u}-{i}"})
            for u in users for i in range(3)]


@pytest.fixture
def running(broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2})
    profile_worker(workers, cfg_path, 1, free_port(), "w").start().wait_healthy()
    return load_config(cfg_path, env={})


def test_confluent_kafka_both_ways(running):
    cfg = running
    users = range(1000, 1010)
    # murmur2_random is the Java client's partitioner, which the query API routes by
    p = ck.Producer({"bootstrap.servers": cfg.kafka.bootstrap_servers,
                     "partitioner": "murmur2_random"})
    for line in events_for(users, int(time.time()) - 3600):
        p.produce(cfg.kafka.topics.user_events, key=str(orjson.loads(line)["user_id"]),
                  value=line)
    assert p.flush(30) == 0
    c = ck.Consumer({"bootstrap.servers": cfg.kafka.bootstrap_servers,
                     "group.id": f"ck-{uuid.uuid4()}", "auto.offset.reset": "earliest",
                     "session.timeout.ms": 10000})
    c.subscribe([cfg.kafka.topics.profile_updates])
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + 90
    while len(seen) < len(users) and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            rec = orjson.loads(m.value())
            if rec["user_id"] in users:
                seen[rec["user_id"]] = rec
    c.close()
    assert sorted(seen) == list(users)
    assert all(r["features"]["108"] == [1080000001] and r["trigger"] == "event"
               for r in seen.values())


def test_kafkajs_both_ways(running, tmp_path):
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.fail("node and npm are needed for the kafkajs interop test")
    if not (JS / "node_modules" / "kafkajs").exists():
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund"], cwd=JS,
                       check=True, timeout=300)
    cfg = running
    users = range(2000, 2010)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(events_for(users, int(time.time()) - 3600)) + b"\n")
    r = subprocess.run(["node", str(JS / "kafkajs_client.js"), cfg.kafka.bootstrap_servers,
                        cfg.kafka.topics.user_events, cfg.kafka.topics.profile_updates,
                        str(events)], capture_output=True, text=True, timeout=150)
    assert r.returncode == 0, r.stderr
    recs = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert sorted(rec["user_id"] for rec in recs) == list(users)
    assert all(rec["features"]["108"] == [1080000001] for rec in recs)
