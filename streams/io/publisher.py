"""The producer for what the workers publish (profile-updates, profile-aggregates, the DLQ,
alerts): librdkafka (`confluent-kafka`) by default, aiokafka as `kafka.output_client: aiokafka`.

It is separate from Faust's producer (the table changelog) so that a commit's publishes and state
writes are flushed side by side and the scheduled jobs can deliver records before states.
librdkafka costs less CPU per record than aiokafka (BENCHMARKS.md, "Output producers"): its
`produce` hands the record to C, which batches and sends it on threads of its own, where
aiokafka builds each batch in Python on the event loop. Its partitioner is murmur2_random,
aiokafka's and Java's murmur2 for keyed records: a key lands in the same partition of the
compacted topics whichever client wrote it.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Iterable, Protocol

from aiokafka import AIOKafkaProducer

from features.config import ProfileConfig
from streams.io.producer_settings import aiokafka_producer_kwargs, librdkafka_producer_settings

MAX_REQUEST = 4 * 1024 * 1024       # a dead letter keeps up to 256 KiB of the original, base64


class Publisher(Protocol):
    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Queue a record (delivered by the next `flush`, or sooner)."""
        ...

    async def send_many(self, records: Iterable[Any]) -> None:
        """Queue records with `topic`, `key` and `value` (streams.pipeline.outbox.Record)."""
        ...

    async def flush(self) -> None:
        """Deliver every record queued so far; raises if one could not be delivered."""
        ...

    async def stop(self) -> None: ...


def open_publisher(cfg: ProfileConfig, producer: Any = None) -> Publisher:
    """The configured output client (`kafka.output_client`), not yet connected; `producer`:
    a librdkafka producer to publish through (exactly_once_v2: the transactional one)."""
    if cfg.kafka.output_client == "aiokafka":
        if producer is not None:
            raise ValueError("the aiokafka output client makes its own producer")
        return AiokafkaPublisher(cfg.kafka.bootstrap_servers, aiokafka_producer_kwargs(cfg))
    return LibrdkafkaPublisher(cfg.kafka.bootstrap_servers, librdkafka_producer_settings(cfg),
                               producer)


class AiokafkaPublisher:
    def __init__(self, bootstrap: str, producer_kwargs: dict | None = None):
        self.bootstrap = bootstrap
        self.producer_kwargs = producer_kwargs or {}
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._starting:
                if self._producer is None:
                    p = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                         max_batch_size=512 * 1024,
                                         max_request_size=MAX_REQUEST,
                                         **{"acks": "all", **self.producer_kwargs})
                    await p.start()
                    self._producer = p
        return self._producer

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        await (await self._started()).send(topic, value, key=key)

    async def send_many(self, records: Iterable[Any]) -> None:
        producer = await self._started()
        for r in records:
            await producer.send(r.topic, r.value, key=r.key)

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def stop(self) -> None:
        if self._producer is not None:
            p, self._producer = self._producer, None
            await p.flush()
            await p.stop()


class DeliveryError(RuntimeError):
    pass


def output_settings(bootstrap: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka's settings for the output records (`settings` over these defaults)."""
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 512 * 1024,
        "message.max.bytes": MAX_REQUEST,
        # murmur2 for keyed records (aiokafka's and Java's), random for keyless ones;
        # librdkafka's default (consistent_random, CRC32) would move keys
        "partitioner": "murmur2_random",
        # back within a second of the broker answering again: a record that waited out an
        # outage must reach the broker before a new owner of its partition can publish
        # (streams.pipeline.fencing); librdkafka's default backs off up to 10 s
        "reconnect.backoff.max.ms": 1000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        **(settings or {}),
    }


class LibrdkafkaPublisher:
    """confluent-kafka's Producer from asyncio: `produce` only queues (a full queue waits on the
    event loop, not in C); `flush` runs librdkafka's flush on a thread of its own, so the loop
    keeps running while the broker acknowledges, and raises if any record since the last flush
    failed."""

    FLUSH_STEP = 0.5        # seconds per librdkafka flush call (a stop is noticed in between)

    def __init__(self, bootstrap: str, settings: dict[str, Any] | None = None,
                 producer: Any = None):
        self.settings = output_settings(bootstrap, settings)
        # made at the first record unless given (exactly_once_v2: the worker's transactional
        # producer, streams.io.transactions, shared with the changelog writer)
        self._producer: Any = producer
        # delivery failures: counted (callbacks run on the flushing threads) and each raised by
        # every flush that was running when it happened, or by the next one
        self._failures = 0
        self._reported = 0
        self._last_error = ""
        self._lock = threading.Lock()

    def _started(self) -> Any:
        if self._producer is None:
            import confluent_kafka
            self._producer = confluent_kafka.Producer(self.settings)
        return self._producer

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._lock:
                self._failures += 1
                self._last_error = f"{msg.topic()}: {err}"

    def produce(self, topic: str, key: bytes | None, value: bytes) -> bool:
        """Queue a record now; False when librdkafka's queue is full (nothing queued)."""
        try:
            self._started().produce(topic, value, key, on_delivery=self._delivered)
        except BufferError:
            return False
        return True

    async def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        while not self.produce(topic, key, value):
            await self._make_room()

    async def send_many(self, records: Iterable[Any]) -> None:
        produce = self._started().produce
        delivered = self._delivered
        for r in records:
            while True:
                try:
                    produce(r.topic, r.value, r.key, on_delivery=delivered)
                    break
                except BufferError:
                    await self._make_room()

    async def _make_room(self) -> None:
        """The queue is full: serve delivery reports without blocking the loop."""
        await asyncio.get_running_loop().run_in_executor(None, self._producer.poll, 0.05)

    async def flush(self) -> None:
        producer = self._producer
        if producer is None:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            at_start, unreported = self._failures, self._failures > self._reported
        while await loop.run_in_executor(None, producer.flush, self.FLUSH_STEP):
            pass
        with self._lock:
            failed = unreported or self._failures != at_start
            self._reported = max(self._reported, self._failures)
            error = self._last_error
        if failed:
            raise DeliveryError(f"records not delivered ({self._failures} so far), e.g. {error}")

    async def stop(self) -> None:
        if self._producer is not None:
            try:
                await self.flush()
            finally:
                self._producer = None
