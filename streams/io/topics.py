"""The system's topics, created at start-up when missing."""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError

from features.config import ProfileConfig
from streams.io.kafka_security import client_kwargs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool


def topic_specs(cfg: ProfileConfig) -> list[TopicSpec]:
    t, n = cfg.kafka.topics, cfg.kafka.partitions
    return [
        TopicSpec(t.user_events, n, False),
        TopicSpec(t.item_features, n, True),
        TopicSpec(t.profile_updates, n, True),
        TopicSpec(t.profile_aggregates, n, False),
        TopicSpec(t.dlq, n, False),
        TopicSpec(t.alerts, 1, False),
    ]


def broker_unavailable(exc: BaseException | None) -> KafkaError | None:
    """The Kafka error behind `exc` (its cause or context chain) when it says the broker did not
    answer for now (a retriable error, or a client-side timeout), else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, KafkaError) and (exc.retriable or isinstance(exc, KafkaTimeoutError)):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


class TopicMismatch(RuntimeError):
    """An existing topic the state depends on has another partition count than configured."""


async def _check_partitions(admin: AIOKafkaAdminClient, cfg: ProfileConfig,
                            existing: set[str]) -> None:
    name = cfg.kafka.topics.user_events
    if name not in existing:
        return
    meta = await admin.describe_topics([name])
    n = len(meta[0]["partitions"])
    if n != cfg.kafka.partitions:
        raise TopicMismatch(
            f"topic {name} has {n} partitions but kafka.partitions is {cfg.kafka.partitions}; "
            "the state table's changelog must match it (was the topic auto-created by a producer "
            "before the system created it? recreate it, or set kafka.partitions to match)")


async def ensure_topics(cfg: ProfileConfig) -> list[str]:
    """Create the missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(**client_kwargs(cfg),
                                bootstrap_servers=cfg.kafka.bootstrap_servers,
                                request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await _check_partitions(admin, cfg, existing)
        missing = [s for s in topic_specs(cfg) if s.name not in existing]
        created = []
        for spec in missing:
            configs = {"cleanup.policy": "compact"} if spec.compacted else {}
            try:
                await admin.create_topics([NewTopic(spec.name, spec.partitions,
                                                    cfg.kafka.replication, topic_configs=configs)])
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass  # another worker created it meanwhile
        if created:
            log.info("created topics: %s", ", ".join(created))
        return created
    finally:
        await admin.close()


async def ensure_topics_answered(cfg: ProfileConfig, wait: float = 60.0,
                                 retry_every: float = 1.0) -> list[str]:
    """ensure_topics, tried again while the broker does not answer yet, for up to `wait` s: a
    client started just after a broker restart or pause (its first request meets a node that is
    not ready) waits for it, as a starting worker does."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return await ensure_topics(cfg)
        except KafkaError as e:
            if broker_unavailable(e) is None or time.monotonic() > deadline:
                raise
            log.warning("no answer from the broker at %s (%r); trying again in %.0f s",
                        cfg.kafka.bootstrap_servers, e, retry_every)
            await asyncio.sleep(retry_every)
