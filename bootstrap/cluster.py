"""What a bootstrap reads from and writes to the Kafka cluster: the consumer group's members and
offsets, the topics' offsets, the state changelog, and the bootstrap journal (a one-partition
compacted topic `<app_id>-bootstrap`: the latest bootstrap's plan and how far it got).

Writes go in the order that keeps a bootstrap resumable (bootstrap/run.py): the journal says
"started", then the changelog gets the states, then the outputs go out, then the group's
offsets are committed, then the journal says "done".
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import orjson
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from bootstrap.handover import BootstrapError
from features.config import ProfileConfig
from streams.io.kafka_security import librdkafka_settings
from streams.io.producer_settings import librdkafka_producer_settings
from streams.io.topics import ensure_topics
from streams.pipeline.topology import state_changelog_topic

JOURNAL_KEY = b"bootstrap"
# (librdkafka does not mark these retriable; a fresh broker answers them until the group
# coordinator has loaded)
_COORDINATOR_BUSY = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                     KafkaError.NOT_COORDINATOR)
TIMEOUT = 30.0


def journal_topic(cfg: ProfileConfig) -> str:
    return f"{cfg.worker.app_id}-bootstrap"


def _retried(call: Callable[[], Any], what: str) -> Any:
    """A call the broker may answer with a retriable error for a while (a coordinator still
    loading on a fresh broker, a leader moving)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return call()
        except KafkaException as e:
            err = e.args[0] if e.args else None
            retry = getattr(err, "retriable", lambda: False)() or \
                getattr(err, "code", lambda: None)() in _COORDINATOR_BUSY
            if not retry or time.monotonic() > deadline:
                raise BootstrapError(f"{what}: {e}") from None
        time.sleep(0.5)


@dataclass(frozen=True)
class GroupView:
    members: list[str]              # "client_id@host" of each member
    committed: dict[int, int]       # user-events partition -> committed offset


class Cluster:
    def __init__(self, cfg: ProfileConfig):
        self.cfg = cfg
        self.base = {"bootstrap.servers": cfg.kafka.bootstrap_servers, **librdkafka_settings(cfg)}
        self.admin = AdminClient(self.base)
        self.group = cfg.worker.app_id
        self.events = cfg.kafka.topics.user_events
        self.changelog = state_changelog_topic(cfg)
        self.journal_name = journal_topic(cfg)
        self._made_producer: Any = None

    # ------------------------------------------------------------------ reading

    def group_view(self) -> GroupView:
        desc = _retried(lambda: self.admin.describe_consumer_groups(
            [self.group], request_timeout=TIMEOUT)[self.group].result(TIMEOUT),
            f"describing consumer group {self.group}")
        members = [f"{m.client_id}@{m.host}" for m in desc.members]
        req = ConsumerGroupTopicPartitions(self.group)
        got = _retried(lambda: self.admin.list_consumer_group_offsets(
            [req], request_timeout=TIMEOUT)[self.group].result(TIMEOUT),
            f"reading consumer group {self.group}'s offsets")
        committed = {tp.partition: tp.offset for tp in got.topic_partitions or []
                     if tp.topic == self.events and tp.offset >= 0}
        return GroupView(members, committed)

    def partitions(self, topic: str) -> int | None:
        """The topic's partition count, None when it does not exist."""
        meta = self.admin.list_topics(topic=topic, timeout=TIMEOUT).topics.get(topic)
        if meta is None or meta.error is not None:
            return None
        return len(meta.partitions)

    def offsets(self, topic: str, spec: OffsetSpec, n: int) -> list[int]:
        req = {TopicPartition(topic, p): spec for p in range(n)}

        def call() -> list[int]:
            got = self.admin.list_offsets(req, request_timeout=TIMEOUT)
            return [got[TopicPartition(topic, p)].result(TIMEOUT).offset for p in range(n)]
        return _retried(call, f"reading {topic}'s offsets")

    def earliest(self, topic: str, n: int) -> list[int]:
        return self.offsets(topic, OffsetSpec.earliest(), n)

    def latest(self, topic: str, n: int) -> list[int]:
        return self.offsets(topic, OffsetSpec.latest(), n)

    def journal(self) -> dict | None:
        """The latest journal entry, None when no bootstrap ever ran."""
        if self.partitions(self.journal_name) is None:
            return None
        end = self.latest(self.journal_name, 1)[0]
        if end == 0:
            return None
        c = Consumer({**self.base, "group.id": f"{self.group}-bootstrap-reader",
                      "enable.auto.commit": False})
        try:
            c.assign([TopicPartition(self.journal_name, 0, max(0, end - 50))])
            last, deadline = None, time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                msg = c.poll(0.5)
                if msg is None or msg.error():
                    continue
                value, offset = msg.value(), msg.offset() or 0
                if msg.key() == JOURNAL_KEY and value is not None:
                    last = orjson.loads(value)
                if offset >= end - 1:
                    return last
            raise BootstrapError(f"could not read the bootstrap journal {self.journal_name}")
        finally:
            c.close()

    # ------------------------------------------------------------------ writing

    def ensure_topics(self) -> None:
        """The system's topics, the state changelog (compacted, one partition per user-events
        partition, as the workers' Faust table declares it) and the journal."""
        asyncio.run(ensure_topics(self.cfg))
        n = self.cfg.kafka.partitions
        for name, parts in ((self.changelog, n), (self.journal_name, 1)):
            have = self.partitions(name)
            if have is None:
                fut = self.admin.create_topics([NewTopic(
                    name, parts, self.cfg.kafka.replication,
                    config={"cleanup.policy": "compact"})])[name]
                try:
                    fut.result(TIMEOUT)
                except KafkaException as e:
                    if "TOPIC_ALREADY_EXISTS" not in str(e):
                        raise
            elif have != parts:
                raise BootstrapError(f"topic {name} has {have} partitions; kafka.partitions is "
                                     f"{parts}")

    def write_journal(self, entry: dict) -> None:
        self.produce([(self.journal_name, 0, JOURNAL_KEY, orjson.dumps(entry))])

    def produce(self, records: Iterable[tuple[str, int | None, bytes | None, bytes]],
                tick: Callable[[int], None] | None = None) -> int:
        """Deliver (topic, partition or None: by key, key, value) records; raises
        BootstrapError unless every one is acknowledged. Keyed records without a partition
        land where the workers' publisher puts them (murmur2)."""
        producer = self._producer()
        failed: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(f"{msg.topic()}[{msg.partition()}]: {err}")

        n = 0
        for topic, partition, key, value in records:
            while True:
                try:
                    if partition is None:
                        producer.produce(topic, value, key, on_delivery=delivered)
                    else:
                        producer.produce(topic, value, key, partition, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            n += 1
            if n % 10000 == 0:
                producer.poll(0)
                if tick is not None:
                    tick(n)
        while producer.flush(1.0):
            pass
        if tick is not None:
            tick(n)
        if failed:
            raise BootstrapError(f"{len(failed)} records not delivered, e.g. {failed[0]}")
        return n

    def _producer(self) -> Any:
        """One idempotent producer for every write of the run (made at the first)."""
        if self._made_producer is None:
            from confluent_kafka import Producer
            # (no worker's session bounds this producer's delivery time, as it bounds the
            # workers': a slow broker gets five minutes per record)
            self._made_producer = Producer({
                **self.base, **librdkafka_producer_settings(self.cfg),
                "message.timeout.ms": 300_000, "acks": "all", "enable.idempotence": True,
                "linger.ms": 20, "batch.size": 1 << 20, "partitioner": "murmur2_random",
                "queue.buffering.max.messages": 1_000_000})
        return self._made_producer

    def commit_group(self, offsets: list[int]) -> None:
        """Commit the group's user-events offsets (the group must have no members)."""
        req = ConsumerGroupTopicPartitions(
            self.group, [TopicPartition(self.events, p, o) for p, o in enumerate(offsets)])

        def call() -> None:
            for f in self.admin.alter_consumer_group_offsets(
                    [req], request_timeout=TIMEOUT).values():
                f.result(TIMEOUT)
        _retried(call, f"committing consumer group {self.group}'s offsets")
