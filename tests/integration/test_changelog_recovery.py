"""A Faust table on our app skeleton whose changelog is produced in multi-record batches, rebuilt
from it after SIGKILL and loss of the data dir, holds every key with its exact value."""
from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.broker import free_port
from tests.harness import http_json, write_config

INPUT_TOPIC = "recovery-input"  # tests/apps/counter_worker.py

pytestmark = pytest.mark.integration

N_EVENTS = 4000
N_KEYS = 300
PARTITIONS = 8
# The second worker gets the partitions once the broker has expired the SIGKILLed one's session:
# the broker's least (group.min.session.timeout.ms, 6 s) instead of the default 10 s. What the
# table is rebuilt from does not depend on when.
CLIENT = {"session_timeout_seconds": 6, "heartbeat_interval_seconds": 1}


async def _produce(bootstrap: str) -> Counter:
    expected: Counter = Counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i in range(N_EVENTS):
            key = f"user-{(i * 7919) % N_KEYS}"
            value = 1 + i % 3
            expected[key] += value
            futures.append(await producer.send(INPUT_TOPIC, value=str(value).encode(),
                                               key=key.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return expected


def _wait_counts(worker, expected: dict, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    got = {}
    while time.monotonic() < deadline:
        _, got = http_json(worker.url("/counts"))
        if got == expected:
            return got
        time.sleep(0.1)
    return got


async def _committed_total(bootstrap: str, group: str) -> int:
    # A consumer that never subscribes only reads the group's commits (OffsetFetch).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(PARTITIONS):
            total += await consumer.committed(TopicPartition(INPUT_TOPIC, p)) or 0
        return total
    finally:
        await consumer.stop()


def _wait_committed(bootstrap: str, group: str, total: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = asyncio.run(_committed_total(bootstrap, group))
        if done >= total:
            break
        time.sleep(0.1)
    return done


async def _create_input_topic(bootstrap: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(INPUT_TOPIC, partitions, 1)])
    finally:
        await admin.close()


def _run_recovery(broker, workers, tmp_path) -> tuple[dict, dict]:
    # More partitions, more chances for a multi-record batch to end a changelog partition.
    cfg = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": PARTITIONS,
                                                              "client": CLIENT})
    # The table's changelog gets PARTITIONS; its source topic must match (Faust checks).
    asyncio.run(_create_input_topic(broker.bootstrap, PARTITIONS))
    port = free_port()
    argv = ["-m", "tests.apps.counter_worker", str(cfg), "1", str(port)]
    first = workers(argv, port, "first").start()
    first.wait_healthy()
    expected = dict(asyncio.run(_produce(broker.bootstrap)))
    before = _wait_counts(first, expected, 60)
    assert before == expected, "the worker did not count every event before the crash"
    # Input offsets committed, so the restarted worker re-reads nothing: the table can only
    # come back from its changelog.
    assert _wait_committed(broker.bootstrap, "user-profiles", N_EVENTS, 30) == N_EVENTS

    first.kill(signal.SIGKILL)
    shutil.rmtree(tmp_path / "data")          # nothing local left: rebuild from the changelog

    second = workers(argv, port, "second").start()
    second.wait_healthy(120)
    _, after = http_json(second.url("/counts"))
    return expected, after


def test_table_rebuilt_exactly_from_changelog_after_sigkill(broker, workers, tmp_path):
    expected, after = _run_recovery(broker, workers, tmp_path)
    missing = {k: v for k, v in expected.items() if after.get(k) != v}
    assert len(after) == N_KEYS and not missing, \
        f"{len(missing)} of {N_KEYS} keys wrong after recovery, e.g. {list(missing.items())[:5]}"

