"""aiokafka calls with no public API."""
from __future__ import annotations

from aiokafka import AIOKafkaConsumer


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask the cluster for fresh metadata now (a topic created a moment ago)."""
    await consumer._client.force_metadata_update()
