"""Where a checkpoint's outbox goes: state writes to the table and its changelog
(streams.io.changelog_writer), local writes to the partitions' RocksDB, then, once the changelog
has them, records to the output producer (streams.io.publisher); all of it delivered before the
batch's events are acked."""
from __future__ import annotations

import asyncio
from typing import Callable

import faust

from streams.faust_compat.tables import PartitionedTable
from streams.io.publisher import Publisher
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.outbox import Outbox
from streams.state import PartitionStore
from streams.state.table_keys import PARTITION_KEY


class ProducerOutputs:
    def __init__(self, app: faust.App, publisher: Publisher, states: PartitionedTable,
                 clocks: PartitionClocks):
        self.app = app
        self.publisher = publisher
        self.states = states
        self.clocks = clocks

    async def emit(self, outbox: Outbox) -> None:
        """Write the outbox's states to the table (its changelog records are queued)
        and to the partitions' RocksDB; its records wait for `deliver`."""
        states = self.states
        for w in outbox.state_writes:
            states.set(w.partition, w.key, w.value)
        for partition, clock in outbox.clocks.items():
            states.set(partition, PARTITION_KEY, clock.pack())
            self.clocks.set(partition, clock)
        stores: dict[int, PartitionStore] = {}      # one per partition for this outbox
        for lw in outbox.local_writes:
            db = stores.get(lw.partition)
            if db is None:
                db = stores[lw.partition] = states.store(lw.partition)
            if lw.value is None:
                db.delete(lw.key)
            else:
                db.put(lw.key, lw.value)

    async def deliver(self, outbox: Outbox, still_ours: Callable[[], bool]) -> bool:
        """Deliver the state writes emitted so far, then, if `still_ours()` after that, the
        outbox's records (True). States first: a crash between the two leaves a state that says
        its profile was published with the events not acked, and their redelivery publishes it
        again (streams.pipeline.batch_update); the other way round a published record could
        outlive the state that knew of it, and the next owner would not publish over it.
        Faust's own flush before a commit can leave changelog records behind
        (docs/FAUST_INTERNALS.md#changelog-buffer)."""
        await self.states.flush()
        if not still_ours():
            return False
        await self.publisher.send_many(outbox.records)
        await self.publisher.flush()
        return True

    async def deliver_all(self) -> None:
        """Deliver every state write and record handed over so far (both producers at once)."""
        await asyncio.gather(self.states.flush(), self.publisher.flush())

    async def deliver_records(self) -> None:
        """Deliver the records only (scheduled runs: records before the states that say they
        were published)."""
        await self.publisher.flush()
