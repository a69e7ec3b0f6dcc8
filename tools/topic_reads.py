"""Reading a topic to its end as of the call, and whether a group has committed the end of
user-events: what the tests (tests/harness.py) and the measurements (tools/bench/fencing.py)
look at the broker with."""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.faust_compat.aiokafka_calls import refresh_metadata
from streams.io.kafka_security import client_kwargs

# ---------------------------------------------------------------- reading topics to their end
# A read "until idle" (deploy.clients.read_all / latest_by_key / tail with idle_timeout) ends
# only after idle_timeout seconds without a record: 1.5-3 s added to every read. These read up
# to each partition's end offset as of the call instead. A test that needs every output of its
# events in the topic first waits for that (tests.harness wait_delivered, caught_up): an exact
# condition where "idle for N seconds" was a guess.

async def topic_partitions(consumer, topic: str) -> list:
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await refresh_metadata(consumer)    # no topic subscribed: every topic's metadata
        parts = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(parts or ())]


def read_topic(cfg, topic: str, isolation_level: str = "read_committed") -> list:
    """Every record of `topic` (aiokafka ConsumerRecords) from the start to each partition's
    end offset when called (read_committed: its last stable offset), in order per partition;
    [] when the topic does not exist."""
    async def run() -> list:
        consumer = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                                    **client_kwargs(cfg), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    isolation_level=isolation_level)
        await consumer.start()
        out: list = []
        try:
            tps = await topic_partitions(consumer, topic)
            if not tps:
                return out
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            left = {tp for tp in tps if end[tp] > 0}
            while left:
                batches = await consumer.getmany(*left, timeout_ms=200, max_records=20000)
                for recs in batches.values():
                    out.extend(recs)
                left = {tp for tp in left if await consumer.position(tp) < end[tp]}
        finally:
            await consumer.stop()
        return out
    return asyncio.run(run())


def events_acked(cfg) -> bool:
    """The group's committed offsets of user-events are its end offsets: every event's
    outputs were delivered (a checkpoint is acked after its delivery, and only acked offsets
    are committed). Holds across worker restarts; the commits come every
    broker_commit_interval (Faust: 2.8 s). Not for held publishes (update_interval)."""
    async def run() -> bool:
        # a consumer that never subscribes only reads the group's commits (OffsetFetch)
        consumer = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                                    **client_kwargs(cfg), group_id=cfg.worker.app_id,
                                    enable_auto_commit=False)
        await consumer.start()
        try:
            tps = await topic_partitions(consumer, cfg.kafka.topics.user_events)
            end = await consumer.end_offsets(tps)
            for tp in tps:
                if end[tp] and (await consumer.committed(tp) or 0) < end[tp]:
                    return False
            return bool(tps)
        finally:
            await consumer.stop()
    return asyncio.run(run())
