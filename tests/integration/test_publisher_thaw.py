"""A worker frozen (SIGSTOP) while its output producer holds records must not publish them
after its partitions' next owner: such a record, landing last, is what a compacted topic keeps
(`make chaos` seed 44 on Apache Kafka: a worker stopped 15 s within a millisecond of handing
over records, and a user's last record was a version its successor had long replaced;
docs/RELIABILITY.md). The output producer drops a record it held past
`kafka.client.delivery_timeout_seconds`, which is below the time the group takes to move a
frozen worker's partitions. Against the real embedded broker, with the workers' own output
client in a process of its own: frozen longer than the delivery timeout while it publishes, it
must put no record handed over before the freeze after a record another producer wrote during
it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from features.config import load_config
from tests.harness import ROOT, create_topic, write_config

pytestmark = pytest.mark.integration

TOPIC = "thaw-test"
CLIENT = {"session_timeout_seconds": 6, "heartbeat_interval_seconds": 1}     # delivery: 3 s
FROZEN = 5.0


async def _marker(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, json.dumps({"marker": time.time()}).encode(), b"k")
    finally:
        await producer.stop()


async def _read_all(bootstrap: str) -> list[dict]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(TOPIC, 0)
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: list[dict] = []
        deadline = time.monotonic() + 60
        while len(out) < end and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=2000, max_records=10_000)
            out.extend(json.loads(m.value) for m in batch.get(tp, []))
        return out
    finally:
        await consumer.stop()


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


def test_records_held_through_a_freeze_are_dropped_not_published_late(broker, tmp_path):
    import asyncio
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"client": CLIENT})
    assert load_config(cfg_path).kafka.client.delivery_timeout_ms() < FROZEN * 1000
    asyncio.run(create_topic(broker.bootstrap, TOPIC, 1))
    # publishes for 9 s and stops itself 2 s in, right after handing over a burst
    proc = subprocess.Popen([sys.executable, "-m", "tests.apps.steady_publisher", str(cfg_path),
                             TOPIC, "9", "2"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _stopped(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "it never froze"
            time.sleep(0.01)
        frozen_at = time.time()
        time.sleep(1.0)
        asyncio.run(_marker(broker.bootstrap))          # the next owner's record
        time.sleep(FROZEN - 1.0)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    result = json.loads(out.strip().splitlines()[-1])
    records = asyncio.run(_read_all(broker.bootstrap))
    at = next(i for i, r in enumerate(records) if "marker" in r)
    late = [r for r in records[at + 1:] if r["t"] < frozen_at]
    # it published before the freeze and after the thaw
    assert at > 100 and len(records) > at + 100, (at, len(records), result)
    assert not late, f"{len(late)} records handed over before the freeze landed after the " \
                     f"marker (oldest {frozen_at - min(r['t'] for r in late):.2f} s before it)"
    # the records it held were dropped, and its flush said so
    assert result["error"] and "timed out" in result["error"], result
