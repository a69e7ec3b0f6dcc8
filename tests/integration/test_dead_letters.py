"""Every reason code of FEATURES.md §6 lands in user-events-dlq with its reason, source position
and original bytes; duplicates are counted, not dead-lettered; the worker keeps going. An
un-keyed event publishes nothing, and its dead letter produced again with its key is applied."""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from deploy.broker import free_port
from features.config import load_config
from features.events import REASONS
from streams.io.dead_letters import original_bytes
from tests.harness import (
    http_json,
    latest_values,
    profile_worker,
    topic_values,
    wait_delivered,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
DAY = 86400


def ev(uid=1, **kw):
    base = {"user_id": uid, "item_id": 5, "timestamp": int(time.time()) - DAY, "action_type": 1}
    base.update(kw)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def bad_records() -> list[tuple[str | None, bytes, bytes]]:
    """(expected reason or None when accepted, key, value), in the order they are sent."""
    now = int(time.time())
    return [
        ("malformed_json", b"1", b'{"user_id": 1,'),
        ("not_an_object", b"1", b"[1, 2, 3]"),
        ("too_large", b"1", ev(pad="x" * 70_000)),
        ("missing_field", b"1", ev(item_id=...)),
        ("bad_type", b"1", ev(item_id="five")),
        ("out_of_range", b"1", ev(dwell_time=90_000)),
        ("unknown_action", b"1", ev(action_type=42)),
        ("missing_key", None, ev(uid=11)),                                  # a new user
        ("key_mismatch", b"2", ev(uid=1)),
        ("future_timestamp", b"1", ev(timestamp=now + 3600)),
        (None, b"5", ev(uid=5, timestamp=now - DAY, event_id="a")),          # sets user 5's T
        ("too_late", b"5", ev(uid=5, timestamp=now - 40 * DAY)),
        (None, b"5", ev(uid=5, timestamp=now - DAY + 5, event_id="a")),      # duplicate
        (None, b"9", ev(uid=9, timestamp=now - 100)),                         # still going
    ]


async def _send(bootstrap: str, topic: str, records) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2 ** 20)
    await producer.start()
    try:
        for _, key, value in records:
            await (await producer.send(topic, key=key, value=value))
    finally:
        await producer.stop()


def test_every_reason_code_is_dead_lettered(broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2},
                            monitoring={"alert_interval_seconds": 1})
    cfg = load_config(cfg_path, env={})
    port = free_port()
    w = profile_worker(workers, cfg_path, 1, port, "w").start()
    w.wait_healthy()
    records = bad_records()
    asyncio.run(_send(broker.bootstrap, cfg.kafka.topics.user_events, records))

    want = Counter(r for r, _, _ in records if r)
    assert set(want) == set(REASONS)

    deadline = time.monotonic() + 60
    dlq: list[dict] = []
    while time.monotonic() < deadline:
        dlq = topic_values(cfg, cfg.kafka.topics.dlq)
        if len(dlq) >= sum(want.values()):
            break
        time.sleep(0.1)
    got = Counter(d["reason"] for d in dlq)
    print(f"\ndead letters by reason: {dict(sorted(got.items()))}")
    assert got == want
    sent = {(r, v) for r, _, v in records if r}
    for d in dlq:
        assert (d["reason"], original_bytes(d)) in sent
        assert d["message"] and d["source"]["topic"] == cfg.kafka.topics.user_events
        assert d["source"]["offset"] >= 0 and d["original_size"] == len(original_bytes(d))

    # the worker kept going: user 9's event (sent last) was applied and published
    st = wait_for(lambda: http_json(w.url("/profiles/9"))[0] == 200, 30)
    assert st, "the event after the bad ones was not processed"
    counts = http_json(w.url("/stats"))[1]["counts"]
    assert {k.removeprefix("dlq_"): v for k, v in counts.items() if k.startswith("dlq_")} == want
    assert counts["duplicates"] == 1 and counts["applied"] == 2
    assert w.proc.poll() is None
    wait_delivered(cfg, [w])  # every record the worker made is in its topic (dead letters too)
    assert len(topic_values(cfg, cfg.kafka.topics.dlq)) == sum(want.values())
    updates = latest_values(cfg, cfg.kafka.topics.profile_updates)
    assert set(updates) == {b"5", b"9"}          # nothing from the un-keyed event of user 11
    assert http_json(w.url("/profiles/11"))[0] == 404

    def alerts() -> set[str]:
        return {a["alert"] for a in topic_values(cfg, cfg.kafka.topics.alerts)}
    assert wait_for(lambda: "unkeyed_events" in alerts(), 20), alerts()
    assert counts["dlq_missing_key"] == 1

    # the missing_key dead letter keeps what it takes to produce the event again, keyed
    unkeyed = [d for d in dlq if d["reason"] == "missing_key"]
    assert len(unkeyed) == 1 and unkeyed[0]["key"] is None and "11" in unkeyed[0]["message"]
    original = original_bytes(unkeyed[0])
    asyncio.run(_send(broker.bootstrap, cfg.kafka.topics.user_events,
                      [(None, str(orjson.loads(original)["user_id"]).encode(), original)]))
    assert wait_for(lambda: http_json(w.url("/profiles/11"))[0] == 200, 30), \
        "the dead letter produced again with its key was not applied"
