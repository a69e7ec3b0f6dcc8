"""The producer for what the workers publish (profile-updates, profile-aggregates, the DLQ).

It is separate from Faust's producer (the table changelog) so that a batch's publishes and state
writes are flushed side by side and the scheduled jobs can deliver records before states. On the
embedded broker `end_offsets` of these topics can read low (BROKER.md defect 1); consumers should
rely on the fetch high watermark (as `profiles tail` does), or on a real Kafka cluster where the
defect does not exist.
"""
from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer


class Publisher:
    def __init__(self, bootstrap: str, client_kwargs: dict | None = None):
        self.bootstrap = bootstrap
        self.client_kwargs = client_kwargs or {}
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._starting:
                if self._producer is None:
                    p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                         linger_ms=20, max_batch_size=512 * 1024,
                                         max_request_size=4 * 1024 * 1024,
                                         **self.client_kwargs)
                    await p.start()
                    self._producer = p
        return self._producer

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue a record (delivered by the next `flush`, or sooner)."""
        await (await self._started()).send(topic, value, key=key)

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def stop(self) -> None:
        if self._producer is not None:
            p, self._producer = self._producer, None
            await p.flush()
            await p.stop()
