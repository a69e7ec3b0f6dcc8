"""Hostile payloads through a live worker: it keeps running, and every payload is either applied
or dead-lettered with the reason the validator gives it; the counts match the DLQ topic.
FUZZ_LIVE sets the count (`make chaos`: 100,000; `make test`: 4,000). Two payloads are 10 MiB:
Kafka refuses records over a topic's `max.message.bytes` (1 MiB by default), so `user-events` is
created here allowing 16 MiB, as a cluster that takes large records would have it."""
from __future__ import annotations

import asyncio
import os
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from deploy.broker import free_port
from features.config import load_config
from features.events import EventParser, Rejection
from tests.harness import (
    http_json,
    profile_worker,
    topic_values,
    wait_delivered,
    wait_for,
    write_config,
)
from tools.data.hostile import hostile_payloads

pytestmark = pytest.mark.integration
N = int(os.environ.get("FUZZ_LIVE", "4000"))
BIG_RECORDS = 16 * 1024 * 1024


async def _create_topic(bootstrap: str, name: str, partitions: int, configs: dict) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()


def test_live_worker_survives_hostile_input_with_matching_counts(broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2})
    cfg = load_config(cfg_path, env={})
    asyncio.run(_create_topic(cfg.kafka.bootstrap_servers, cfg.kafka.topics.user_events, 2,
                              {"max.message.bytes": str(BIG_RECORDS)}))
    w = profile_worker(workers, cfg_path, 1, free_port(), "w1").start()
    w.wait_healthy()
    payloads = list(hostile_payloads(N, seed=9, big_messages=2))
    parser = EventParser(cfg.events)

    async def send():
        p = AIOKafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                             max_request_size=BIG_RECORDS)
        await p.start()
        sent, delivered = [], []
        try:
            for raw, key, _ in payloads:
                try:
                    delivered.append(await p.send(cfg.kafka.topics.user_events, raw, key=key))
                    sent.append((raw, key))
                except Exception as e:        # refused before the broker: none expected
                    print(f"not sent ({len(raw):,} bytes): {e}")
            await asyncio.gather(*delivered)  # refused by the broker: raises
        finally:
            await p.stop()
        return sent
    sent = asyncio.run(send())
    assert len(sent) == len(payloads)

    expected = Counter()
    for raw, key in sent:
        out = parser.parse_message(raw, key)
        expected["applied" if type(out) is not Rejection else f"dlq_{out.reason}"] += 1

    def counts():
        status, body = http_json(w.url("/stats"), timeout=5)
        return body["counts"] if status == 200 else {}
    assert wait_for(lambda: counts().get("events_in", 0) >= len(sent), 300, interval=0.25,
                    what="every payload read")
    c = counts()
    got = Counter({k: v for k, v in c.items() if k.startswith("dlq_")})
    got["applied"] = c.get("applied", 0) + c.get("duplicates", 0)
    print(f"{len(sent):,} payloads (2 of 10 MiB): {dict(sorted(got.items()))}")
    assert c["events_in"] == len(sent)
    assert got == expected
    assert w.proc.poll() is None                        # still running
    assert http_json(w.url("/health"))[0] == 200

    wait_delivered(cfg, [w])  # every dead letter the worker made is in the topic
    dlq = Counter(d["reason"] for d in topic_values(cfg, cfg.kafka.topics.dlq))
    assert {f"dlq_{r}": n for r, n in dlq.items()} == {k: v for k, v in expected.items()
                                                       if k != "applied"}
