"""streams.io.changelog_writer against the embedded broker: the records land in their partitions
in write order, with the keys and values given; each partition's persisted offset ends at its
last record; records another producer wrote in between hold it there."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from streams.io.changelog_writer import ChangelogWriter

pytestmark = pytest.mark.integration
TOPIC = "app-user-state-changelog"


class Offsets:
    def __init__(self):
        self.held: dict[int, int] = {}

    def get(self, p):
        return self.held.get(p)

    def set(self, p, o):
        self.held[p] = o


async def read(bootstrap: str) -> dict[int, list[tuple[int, bytes, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(TOPIC, p) for p in (0, 1)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list] = {0: [], 1: []}
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for tp, recs in (await consumer.getmany(timeout_ms=1000)).items():
                out[tp.partition] += [(r.offset, r.key, r.value) for r in recs]
        return out
    finally:
        await consumer.stop()


def test_records_land_in_order_and_the_offset_follows_our_own(broker):
    async def run():
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, 2, 1)])
        finally:
            await admin.close()
        offsets = Offsets()
        w = ChangelogWriter(TOPIC, {"bootstrap.servers": broker.bootstrap}, offsets)
        for i in range(300):
            w.write(i % 2, b"user-%d" % (i % 7), b"state-%d" % i)
        await w.flush()
        assert offsets.held == {0: 149, 1: 149}
        got = await read(broker.bootstrap)
        assert [v for _, _, v in got[0]] == [b"state-%d" % i for i in range(0, 300, 2)]
        assert [k for _, k, _ in got[1]] == [b"user-%d" % (i % 7) for i in range(1, 300, 2)]
        # a frozen worker's late write lands between ours: the offset stays before it
        other = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await other.start()
        await other.send_and_wait(TOPIC, b"late", key=b"user-1", partition=0)
        await other.stop()
        w.write(0, b"user-2", b"newer")
        w.write(1, b"user-3", b"newer")
        await w.stop()
        assert offsets.held == {0: 149, 1: 150}
        got = await read(broker.bootstrap)
        assert got[0][-2:] == [(150, b"user-1", b"late"), (151, b"user-2", b"newer")]

    asyncio.run(run())
