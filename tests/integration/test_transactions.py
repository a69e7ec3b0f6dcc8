"""Kafka transactions against the embedded broker, for a group that aiokafka joins and a
librdkafka producer commits for (streams.faust_compat.group_metadata), the ground exactly-once
builds on (issue 27):
- the metadata we serialize is byte for byte a confluent-kafka member's;
- a transaction commits an aiokafka member's offsets with its output atomically, and a
  read_committed reader sees the output only once the transaction commits;
- offsets sent with a generation the group has moved past are refused by the broker: the
  transaction is aborted (streams.io.transactions.TransactionAborted), nothing of it visible to
  a read_committed reader, and the producer goes on;
- a producer with the same transactional id (a restarted worker) fences the earlier one
  (TransactionFenced), nothing of its open transaction visible."""
from __future__ import annotations

import asyncio
import time

import confluent_kafka as ck
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from deploy import broker as embedded
from streams.faust_compat.group_metadata import (
    aiokafka_group_metadata,
    aiokafka_member,
    librdkafka_group_metadata,
    parse_group_metadata,
)
from streams.io.transactions import TransactionAborted, TransactionalProducer, TransactionFenced
from tests.harness import create_topic, start_broker, wait_for

pytestmark = pytest.mark.integration
IN, OUT = "txn-in", "txn-out"


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One embedded broker for the module (its tests use topics and groups of their own)."""
    b = start_broker(tmp_path_factory.mktemp("txn") / "broker-run")
    yield b
    embedded.kill(b.run_dir)


def test_our_metadata_is_a_confluent_kafka_members(broker):
    asyncio.run(create_topic(broker.bootstrap, "cgmd-in", 1))
    c = ck.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "cgmd",
                     "session.timeout.ms": 6000})
    try:
        c.subscribe(["cgmd-in"])
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


def test_transactions_commit_a_members_offsets_with_the_output_and_fence_zombies(broker):
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

        async def visible() -> list[bytes]:
            return await _read_committed(broker.bootstrap, OUT)

        settings = {"bootstrap.servers": broker.bootstrap, "transaction.timeout.ms": 10000}
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

            tx = TransactionalProducer(settings, "worker-1")
            await tx.begin()
            tx.produce(OUT, b"out-1", partition=0)
            assert await visible() == []            # not before the commit
            await tx.commit({(IN, 0): 5}, old)
            assert await visible() == [b"out-1"]
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

                # a zombie of the old generation: its transaction is aborted by the broker
                await tx.begin()
                tx.produce(OUT, b"zombie", partition=0)
                with pytest.raises(TransactionAborted, match="generation"):
                    await tx.commit({(IN, 0): 9}, old)
                assert not tx.in_transaction
                assert await visible() == [b"out-1"]
                assert await first.committed(tp) == 5

                # the same producer goes on under the member's current metadata
                await tx.begin()
                tx.produce(OUT, b"out-2", partition=0)
                await tx.commit({(IN, 0): 7}, aiokafka_group_metadata(first, "txn"))
                assert await visible() == [b"out-1", b"out-2"]
                assert await first.committed(tp) == 7
            finally:
                await second.stop()

            # a restarted worker's producer (same transactional id) fences the earlier one
            restarted = TransactionalProducer(settings, "worker-1")
            await restarted.begin()
            with pytest.raises(TransactionFenced):
                await tx.begin()
                tx.produce(OUT, b"fenced", partition=0)
                await tx.commit({(IN, 0): 8}, aiokafka_group_metadata(first, "txn"))
            await restarted.abort()
            assert await visible() == [b"out-1", b"out-2"]
            assert await first.committed(tp) == 7
        finally:
            await first.stop()

    asyncio.run(run())
