"""Kafka transactions against the embedded broker, for a group that aiokafka joins and a
librdkafka producer commits for (streams.faust_compat.group_metadata), the ground exactly-once
builds on (issue 27):
- the metadata we serialize is byte for byte a confluent-kafka member's;
- a transaction commits an aiokafka member's offsets with its output atomically, and a
  read_committed reader sees the output only once the transaction commits;
- offsets sent with a generation the group has moved past are refused by the broker, and
  nothing of that transaction becomes visible to a read_committed reader."""
from __future__ import annotations

import asyncio
import time

import confluent_kafka as ck
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.faust_compat.group_metadata import (
    aiokafka_group_metadata,
    aiokafka_member,
    librdkafka_group_metadata,
    parse_group_metadata,
)
from tests.harness import create_topic, wait_for

pytestmark = pytest.mark.integration
IN, OUT = "txn-in", "txn-out"


def test_our_metadata_is_a_confluent_kafka_members(broker):
    asyncio.run(create_topic(broker.bootstrap, IN, 1))
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cgmd",
                     "session.timeout.ms": 6000})
    try:
        c.subscribe([IN])
        assert wait_for(lambda: c.poll(0.2) is None and bool(c.assignment()), 30,
                        what="a confluent-kafka member with its assignment")
        theirs = c.consumer_group_metadata()
        generation, group, member = parse_group_metadata(theirs)
        assert group == "cgmd" and member == c.memberid() and generation >= 1
        assert librdkafka_group_metadata("cgmd", generation, member) == theirs
    finally:
        c.close()


async def _read_committed(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of `topic`'s partition 0 a read_committed reader sees."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                              enable_auto_commit=False)
    await reader.start()
    try:
        tp = TopicPartition(topic, 0)
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]     # the last stable offset
        got: list[bytes] = []
        while await reader.position(tp) < end:
            for recs in (await reader.getmany(timeout_ms=1000)).values():
                got += [r.value for r in recs]
        return got
    finally:
        await reader.stop()


def _transactional(bootstrap: str, tid: str) -> ck.Producer:
    p = ck.Producer({"bootstrap.servers": bootstrap, "transactional.id": tid,
                     "transaction.timeout.ms": 10000})
    p.init_transactions(30)
    return p


def test_a_transaction_commits_an_aiokafka_members_offsets_and_a_stale_generation_is_fenced(
        broker):
    async def run():
        await create_topic(broker.bootstrap, IN, 1)
        await create_topic(broker.bootstrap, OUT, 1)
        prod = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await prod.start()
        try:
            for i in range(10):
                await prod.send_and_wait(IN, b"e%d" % i, partition=0)
        finally:
            await prod.stop()

        def member() -> AIOKafkaConsumer:
            return AIOKafkaConsumer(IN, bootstrap_servers=broker.bootstrap, group_id="txn",
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    session_timeout_ms=6000, heartbeat_interval_ms=500)

        first = member()
        await first.start()
        tp = TopicPartition(IN, 0)
        try:
            deadline = time.monotonic() + 30
            while not first.assignment() and time.monotonic() < deadline:
                await first.getmany(timeout_ms=200)
            assert first.assignment() == {tp}
            generation, member_id = aiokafka_member(first)
            assert generation >= 1 and member_id
            old = aiokafka_group_metadata(first, "txn")

            producer = _transactional(broker.bootstrap, "txn-worker-1")
            producer.begin_transaction()
            producer.produce(OUT, b"out-1", partition=0)
            producer.send_offsets_to_transaction([ck.TopicPartition(IN, 0, 5)], old, 30)
            # before the commit: the output is not visible, the offsets not committed
            assert await _read_committed(broker.bootstrap, OUT) == []
            producer.commit_transaction(30)
            assert await _read_committed(broker.bootstrap, OUT) == [b"out-1"]
            assert await first.committed(tp) == 5

            # a second member: the group moves to a new generation
            second = member()
            await second.start()
            try:
                async def rebalanced() -> bool:
                    await asyncio.gather(first.getmany(timeout_ms=200),
                                         second.getmany(timeout_ms=200))
                    return aiokafka_member(first)[0] > generation and \
                        aiokafka_member(second)[0] > generation
                deadline = time.monotonic() + 30
                while not await rebalanced():
                    assert time.monotonic() < deadline, "no rebalance to a new generation"

                # a zombie: offsets sent with the old generation's metadata are refused
                producer.begin_transaction()
                producer.produce(OUT, b"zombie", partition=0)
                with pytest.raises(ck.KafkaException) as e:
                    producer.send_offsets_to_transaction([ck.TopicPartition(IN, 0, 9)], old,
                                                         30)
                err = e.value.args[0]
                # (the member itself is still in the group, in the new generation)
                assert err.code() == ck.KafkaError.ILLEGAL_GENERATION, err
                assert err.txn_requires_abort() or err.fatal(), err
                if not err.fatal():
                    producer.abort_transaction(30)
                assert await _read_committed(broker.bootstrap, OUT) == [b"out-1"]
                assert await first.committed(tp) == 5
            finally:
                await second.stop()
        finally:
            await first.stop()

    asyncio.run(run())
