"""Read one partition of the event log from its earliest retained offset (no consumer group):
the weekly full rebuild's input."""
from __future__ import annotations

from typing import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_partition(bootstrap: str, topic: str, partition: int, upto: int,
                         start: int | None = None, chunk: int = 20_000,
                         client_kwargs: dict | None = None) -> AsyncIterator[list]:
    """Lists of records (offset, key, value, ...) of offsets start..upto (start None: the
    earliest retained); ends after `upto`. An empty partition or upto < start yields nothing."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 * 1024 * 1024,
                                **(client_kwargs or {}))
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        while await consumer.position(tp) <= upto:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=chunk)
            records = [r for r in batches.get(tp, ()) if r.offset <= upto]
            if records:
                yield records
            elif consumer.highwater(tp) is not None and consumer.highwater(tp) <= \
                    await consumer.position(tp):
                break                       # nothing more in the log (upto was beyond its end)
    finally:
        await consumer.stop()
