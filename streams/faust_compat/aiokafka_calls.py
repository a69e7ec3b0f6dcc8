"""aiokafka calls with no public API, and the one change to its client: a client that knows no
broker re-bootstraps (docs/FAUST_INTERNALS.md#clients-that-know-no-broker)."""
from __future__ import annotations

import functools
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.errors import KafkaConnectionError

log = logging.getLogger(__name__)
BOOTSTRAP_CONN = ("bootstrap", ConnectionGroup.DEFAULT)     # aiokafka's key for that connection


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the cluster for fresh metadata now (a topic created a moment ago)."""
    await consumer._client.force_metadata_update()


def knows_no_broker(client: Any) -> bool:
    """aiokafka asks only the brokers its metadata names, and the bootstrap connection while
    it names none; with neither, every metadata update fails until the process ends."""
    return not client.cluster.brokers() and BOOTSTRAP_CONN not in client._conns


def rebootstrap_when_lost(update: Any) -> Any:
    """Wrap AIOKafkaClient._metadata_update: a client that knows no broker connects to its
    bootstrap servers again first. A broker that has just started, or is shutting down,
    answers Metadata with no brokers; aiokafka then keeps only that bootstrap connection, and
    once the broker restarts or the connection is cut, it never asks anyone again
    (aio-libs/aiokafka#551; a chaos run's worker waited for it forever)."""
    @functools.wraps(update)
    async def metadata_update(self: Any, cluster_metadata: Any, topics: Any) -> bool:
        if knows_no_broker(self):
            try:
                await self.bootstrap()
            except KafkaConnectionError as exc:
                log.warning("no broker known and none at the bootstrap servers: %s", exc)
                cluster_metadata.failed_update(None)
                return False
            log.info("no broker was known: bootstrapped again from %s", self.hosts)
        return await update(self, cluster_metadata, topics)
    metadata_update.rebootstraps = True       # type: ignore[attr-defined]
    return metadata_update


def install_rebootstrap() -> None:
    """Make every aiokafka client of this process re-bootstrap when it knows no broker."""
    current = AIOKafkaClient._metadata_update
    if not getattr(current, "rebootstraps", False):
        AIOKafkaClient._metadata_update = rebootstrap_when_lost(current)


def aiokafka_metadata_update() -> Any:
    """AIOKafkaClient._metadata_update as aiokafka has it (without install_rebootstrap's)."""
    update = AIOKafkaClient._metadata_update
    return getattr(update, "__wrapped__", update)


def fetch_position(consumer: Any, tp: Any) -> int | None:
    """An AIOKafkaConsumer's fetch position of `tp` (the next offset it hands out, past the
    transaction markers and aborted records it skipped), read without a call into its thread;
    None when it has none (not assigned, a reset pending, not started)."""
    try:
        state = consumer._fetcher._subscriptions.subscription.assignment.state_value(
            TopicPartition(tp.topic, tp.partition))
    except AttributeError:
        return None
    if state is None or not state.has_valid_position:
        return None
    return int(state.position)
