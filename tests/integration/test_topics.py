"""Topics: created with the configured partitions by `produce` before anything is sent; a worker
refuses an existing user-events topic whose partition count differs, in one sentence."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.harness import create_topic, write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return len((await admin.describe_topics([topic]))[0]["partitions"])
    finally:
        await admin.close()


def test_worker_refuses_a_user_events_topic_with_other_partitions(broker, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 3})
    # created before the system did, e.g. by a broker that auto-creates topics with its default
    # count (the embedded broker does not auto-create)
    asyncio.run(create_topic(broker.bootstrap, "user-events", 1))
    n = asyncio.run(_partitions(broker.bootstrap, "user-events"))
    assert n == 1
    r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg), "worker"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert f"topic user-events has {n} partitions but kafka.partitions is 3" in r.stderr
    assert "Traceback" not in r.stderr


def test_produce_creates_topics_with_configured_partitions(broker, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 3})
    events = tmp_path / "e.jsonl"
    events.write_text('{"user_id": 1, "item_id": 2, "timestamp": 1700000000, "action_type": 1}\n')
    r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg), "produce",
                        str(events)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert asyncio.run(_partitions(broker.bootstrap, "user-events")) == 3
    assert asyncio.run(_partitions(broker.bootstrap, "profile-updates")) == 3
