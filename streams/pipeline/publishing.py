"""What the workers publish: profile records (`profile-updates`), closed days' aggregates
(`profile-aggregates`) and dead letters (`user-events-dlq`), their counts, and the observers
told of each profile published once it is delivered.

Inside a micro-batch a record is staged into the batch's outbox (streams.pipeline.outbox) and
goes out with the rest of the batch; the scheduled runs publish at once (`publish`) and
deliver with `flush`. A publish hold-back (issue 15) belongs here: the one place a profile
record is made.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import orjson

from features.config import TopicNames
from features.profile import Profile
from features.update import aggregates_value
from streams.io.dead_letters import dead_letter
from streams.io.publisher import Publisher
from streams.monitoring.counters import WorkerCounts
from streams.pipeline.outbox import Outbox, Publication, Record
from streams.state.table_keys import user_key

# told of each profile published: (profile, trigger, Kafka timestamp of its event or None)
PublishObserver = Callable[[Profile, str, "float | None"], None]


class Publishing:
    def __init__(self, topics: TopicNames, publisher: Publisher, counts: WorkerCounts,
                 tz: int):
        self.topics = topics
        self.publisher = publisher
        self.counts = counts
        self.tz = tz
        self.on_publish: PublishObserver | None = None

    # ------------------------------------------------------------------ records

    def profile_record(self, profile: Profile, version: int, trigger: str,
                       at: float | None = None) -> Record:
        """`at`: its `updated_at` (default now)."""
        rec = profile.to_record(version, trigger, time.time() if at is None else at)
        self.counts.published[trigger] += 1
        return Record(self.topics.profile_updates, user_key(profile.user_id), orjson.dumps(rec))

    def aggregates_record(self, user_id: int, day: int, metrics: dict[int, Any]) -> Record:
        self.counts.aggregates += 1
        return Record(self.topics.profile_aggregates, user_key(user_id),
                      orjson.dumps(aggregates_value(user_id, day, metrics, self.tz)))

    def dead_letter_record(self, reason: str, message: str, msg: Any) -> Record:
        """The DLQ record of a user-events message (FEATURES.md §6)."""
        value = dead_letter(reason, message, msg.value, msg.key, msg.topic, msg.partition,
                            msg.offset)
        self.counts.dead_letters[reason] += 1
        return Record(self.topics.dlq, msg.key, value)

    # ------------------------------------------------------------------ inside a batch

    def stage_profile(self, outbox: Outbox, profile: Profile, version: int, trigger: str,
                      ingest_ts: float | None = None, at: float | None = None) -> None:
        outbox.records.append(self.profile_record(profile, version, trigger, at))
        if self.on_publish is not None:     # latency counts to delivery: told after the flush
            outbox.publications.append(Publication(profile, trigger, ingest_ts))

    def delivered(self, publications: list[Publication]) -> None:
        """A batch's records are delivered: tell the observers."""
        if self.on_publish is not None:
            for p in publications:
                self.on_publish(p.profile, p.trigger, p.ingest_ts)

    # ------------------------------------------------------------------ outside a batch

    async def publish(self, profile: Profile, version: int, trigger: str) -> None:
        """Hand a profile record to the producer now (delivered by `flush`)."""
        await self.send(self.profile_record(profile, version, trigger))
        if self.on_publish is not None:
            self.on_publish(profile, trigger, None)

    async def send(self, record: Record) -> None:
        await self.publisher.send(record.topic, record.key, record.value)

    async def flush(self) -> None:
        await self.publisher.flush()
