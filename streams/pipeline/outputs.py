"""Where a checkpoint's outbox goes: records to the output producer (streams.publisher), state
writes to the table and its changelog (Faust's producer), local writes to the partitions'
RocksDB; and delivering all of it before the batch's events are acked."""
from __future__ import annotations

import asyncio

import faust

from streams.faust_compat.producer import drain_changelog
from streams.faust_compat.tables import PartitionedTable
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.outbox import Outbox
from streams.publisher import Publisher
from streams.state_table import PARTITION_KEY


class ProducerOutputs:
    def __init__(self, app: faust.App, publisher: Publisher, states: PartitionedTable,
                 clocks: PartitionClocks):
        self.app = app
        self.publisher = publisher
        self.states = states
        self.clocks = clocks

    async def emit(self, outbox: Outbox) -> None:
        """Hand the outbox to the producers and write it to the table (not yet delivered)."""
        await self.publisher.send_many(outbox.records)
        states = self.states
        for w in outbox.state_writes:
            states.set(w.partition, w.key, w.value)
        for partition, clock in outbox.clocks.items():
            states.set(partition, PARTITION_KEY, clock.pack())
            self.clocks.set(partition, clock)
        for lw in outbox.local_writes:
            db = states.db(lw.partition)
            if lw.value is None:
                db.delete(lw.key)
            else:
                db.put(lw.key, lw.value)

    async def deliver(self) -> None:
        """Deliver every state write and record emitted so far (both producers at once); Faust's
        own flush before a commit can leave changelog records behind
        (docs/FAUST_INTERNALS.md#changelog-buffer)."""
        await asyncio.gather(drain_changelog(self.app), self.publisher.flush())

    async def deliver_records(self) -> None:
        """Deliver the records only (scheduled runs: records before the states that say they
        were published)."""
        await self.publisher.flush()
