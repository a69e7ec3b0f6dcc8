"""The changelog records of the state table's writes, sent by a producer of their own in bulk.

Faust sends a table write's changelog record on its own (a `FutureMessage`, Faust's producer
buffer, one aiokafka future each) and, once acknowledged, writes the partition's persisted
offset to RocksDB, per key (about a fifth of a worker's CPU on the sparse sample: BENCHMARKS.md).
Here a write only queues its record on librdkafka (one call into C); `flush` delivers them all,
then moves each partition's persisted offset once, over the acknowledged offsets that directly
follow the one it holds (`advance`): what `guard_persisted` does write by write, so a restore
still starts after the last record this store has everything up to, and a late write of a
frozen worker, landing between ours, keeps it where it was.

The records are the ones Faust would send (the key and value bytes, to the changelog partition
of the write's partition), so Faust's restores and standbys read them as before. The producer is
idempotent (acks=all): a partition's records keep their order through retries, as a key's
states must.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Protocol

from streams.io.publisher import DeliveryError

log = logging.getLogger(__name__)


def advance(held: int | None, offsets: list[int]) -> tuple[int | None, int | None]:
    """The persisted offset after acknowledged writes at `offsets` (ascending): moved over each
    one that directly follows it (the first record of a partition is offset 0). Also the first
    offset past a gap (None when there was none): records in between are not this store's."""
    for o in offsets:
        if (held is None and o == 0) or (held is not None and o == held + 1):
            held = o
        elif held is None or o > held + 1:
            return held, o
    return held, None


class PersistedOffsets(Protocol):
    """Where a partition's restore starts: the store's persisted offset of the changelog
    partition (streams.faust_compat.tables.PartitionedTable)."""

    def get(self, partition: int) -> int | None: ...

    def set(self, partition: int, offset: int) -> None: ...


class ChangelogWriter:
    FLUSH_STEP = 0.5        # seconds per librdkafka flush call

    def __init__(self, topic: str, settings: dict[str, Any], persisted: PersistedOffsets,
                 table_name: str = "table", producer: Any = None):
        self.topic = topic
        self.settings = {"linger.ms": 5, "batch.size": 1024 * 1024,
                         "queue.buffering.max.messages": 1_000_000,
                         "queue.buffering.max.kbytes": 1_048_576,
                         "reconnect.backoff.max.ms": 1000, **settings,
                         "acks": "all", "enable.idempotence": True}
        self.persisted = persisted
        self.table_name = table_name
        self._producer: Any = producer       # (librdkafka's, made at the first write)
        self._lock = threading.Lock()
        self._acked: dict[int, list[int]] = {}      # partition -> offsets acknowledged
        self._failures = 0
        self._last_error = ""
        self._behind: set[int] = set()              # partitions whose offset is held back
        self.queued = 0                             # records since the last flush
        # exactly_once_v2: delivered in the open transaction, by partition
        self._uncommitted: dict[int, list[int]] = {}

    def _started(self) -> Any:
        # (a streams.io.transactions.TransactionalProducer under exactly_once_v2)
        if self._producer is None:
            import confluent_kafka
            self._producer = confluent_kafka.Producer(self.settings)
        return self._producer

    def _delivered(self, err: Any, msg: Any) -> None:
        # (on the thread running librdkafka's flush)
        with self._lock:
            if err is not None:
                self._failures += 1
                self._last_error = f"{msg.topic()}[{msg.partition()}]: {err}"
            else:
                self._acked.setdefault(msg.partition(), []).append(msg.offset())

    def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue the changelog record of a write (None: a deletion's tombstone)."""
        produce = self._started().produce
        while True:
            try:
                produce(self.topic, value, key, partition=partition,
                        on_delivery=self._delivered)
                break
            except BufferError:                     # the queue is full: serve deliveries
                self._producer.poll(0.05)
        self.queued += 1

    async def flush(self) -> None:
        """Deliver every record queued so far, then move the persisted offsets over those
        acknowledged; raises DeliveryError if any record since the last flush failed."""
        if self._producer is None:
            return
        await self._deliver_queued()
        acked, failures, error = self._take_reports()
        for partition, offsets in acked.items():     # (as each ack moved it, failures or not)
            self._move(partition, sorted(offsets))
        self._raise_failures(failures, error)

    async def deliver(self) -> None:
        """exactly_once_v2: deliver what is queued in the open transaction; the persisted
        offsets move only once it commits (`committed`). Raises DeliveryError as `flush`."""
        if self._producer is None:
            return
        await self._deliver_queued()
        acked, failures, error = self._take_reports()
        for partition, offsets in acked.items():
            self._uncommitted.setdefault(partition, []).extend(offsets)
        self._raise_failures(failures, error)

    def committed(self) -> None:
        """The transaction holding the records `deliver` delivered has committed: the persisted
        offsets move over them and over each partition's commit marker, which the broker
        writes right after the partition's last record of the transaction (a record of
        another producer there would be an aborted one: under exactly_once_v2 only a current
        member's transactions commit to a changelog partition)."""
        uncommitted, self._uncommitted = self._uncommitted, {}
        for partition, offsets in uncommitted.items():
            offsets.sort()
            self._move(partition, offsets + [offsets[-1] + 1])

    def aborted(self) -> None:
        """The transaction was aborted: its records never count (a restore skips them)."""
        self._uncommitted = {}

    async def _deliver_queued(self) -> None:
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, self._producer.flush, self.FLUSH_STEP):
            pass
        self.queued = 0

    def _take_reports(self) -> tuple[dict[int, list[int]], int, str]:
        with self._lock:
            acked, self._acked = self._acked, {}
            failures, self._failures = self._failures, 0
            return acked, failures, self._last_error

    def _raise_failures(self, failures: int, error: str) -> None:
        if failures:
            raise DeliveryError(f"{failures} changelog records of {self.table_name} not "
                                f"delivered, e.g. {error}")

    def _move(self, partition: int, offsets: list[int]) -> None:
        held = self.persisted.get(partition)
        new, gap = advance(held, offsets)
        if new != held and new is not None:
            self.persisted.set(partition, new)
            self._behind.discard(partition)
        if gap is not None and partition not in self._behind:
            self._behind.add(partition)
            log.warning("%s: changelog %s[%d] has records at offsets %s..%d this worker did "
                        "not write; its persisted offset stays until a restore reads them",
                        self.table_name, self.topic, partition,
                        0 if new is None else new + 1, gap - 1)

    async def stop(self) -> None:
        if self._producer is not None:
            try:
                await self.flush()
            finally:
                self._producer = None
