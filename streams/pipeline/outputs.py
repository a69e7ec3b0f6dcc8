"""Where a checkpoint's outbox goes: state writes to the table and its changelog
(streams.io.changelog_writer), local writes to the partitions' RocksDB, then, once the changelog
has them, records to the output producer (streams.io.publisher); all of it delivered before the
batch's events are acked.

Under `kafka.processing_guarantee: exactly_once_v2` (TransactionalOutputs) the changelog records,
the output records and the group's offsets are one Kafka transaction, and the partitions'
RocksDB gets the states only once it has committed."""
from __future__ import annotations

import asyncio
from typing import Any, Callable, Protocol

import faust

from streams.faust_compat.tables import PartitionedTable
from streams.io.publisher import Publisher
from streams.io.transactions import TransactionalProducer
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.outbox import Outbox
from streams.state import PartitionStore
from streams.state.table_keys import PARTITION_KEY


def write_local(states: PartitionedTable, outbox: Outbox) -> None:
    """The outbox's local-only writes into the partitions' RocksDB."""
    stores: dict[int, PartitionStore] = {}      # one per partition for this outbox
    for lw in outbox.local_writes:
        db = stores.get(lw.partition)
        if db is None:
            db = stores[lw.partition] = states.store(lw.partition)
        if lw.value is None:
            db.delete(lw.key)
        else:
            db.put(lw.key, lw.value)


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
        write_local(states, outbox)

    async def deliver(self, outbox: Outbox, still_ours: Callable[[], bool],
                      batches: list[Any]) -> bool:
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


class CommittedOffsets(Protocol):
    """What a transaction commits for the group (streams.faust_compat.group.FaustGroup)."""
    @property
    def generation(self) -> int | None: ...

    def next_offsets(self, batches: list[Any]) -> dict[tuple[str, int], int]: ...

    def group_metadata(self, generation: int | None) -> bytes | None: ...


class TransactionalOutputs(ProducerOutputs):
    """exactly_once_v2: `emit` queues the changelog records in the producer's open transaction;
    `deliver` adds the output records and commits it with the offsets past the checkpoint's
    batches, sent with the group metadata, so the broker refuses it once the group has moved
    on (a worker frozen past its session). Only then do the states go into RocksDB: an aborted
    transaction leaves nothing of it there, nor in any read_committed reader's view, and the
    failure restarts the worker (streams.pipeline.profile_pipeline), which reads the events
    again from the committed offsets."""

    def __init__(self, app: faust.App, publisher: Publisher, states: PartitionedTable,
                 clocks: PartitionClocks, producer: TransactionalProducer,
                 group: CommittedOffsets):
        super().__init__(app, publisher, states, clocks)
        if states.changelog is None:
            raise ValueError("exactly_once_v2 writes the changelog through the transaction")
        self.changelog = states.changelog
        self.producer = producer
        self.group = group

    async def emit(self, outbox: Outbox) -> None:
        # (the lifecycle emits only in the generation the checkpoint was computed in)
        outbox.group_metadata = self.group.group_metadata(self.group.generation)
        states = self.states
        for w in outbox.state_writes:
            states.write_changelog(w.partition, w.key, w.value)
        for partition, clock in outbox.clocks.items():
            states.write_changelog(partition, PARTITION_KEY, clock.pack())
            self.clocks.set(partition, clock)

    async def deliver(self, outbox: Outbox, still_ours: Callable[[], bool],
                      batches: list[Any]) -> bool:
        offsets = self.group.next_offsets(batches)
        if not still_ours() or (offsets and outbox.group_metadata is None):
            # not acked: the rejoin under way reads the events again from the committed offsets
            await self._abandon()
            return False
        await self.publisher.send_many(outbox.records)
        await self._commit(offsets, outbox.group_metadata)
        self._write_locally(outbox)
        self.changelog.committed()
        return True

    async def _commit(self, offsets: dict[tuple[str, int], int],
                      group_metadata: bytes | None = None) -> None:
        try:
            # The commit delivers every record of the transaction first, within its timeout,
            # and fails when one was not (a broker away past the delivery timeout leaves the
            # transaction abortable); a flush of our own could wait for ever on a transaction
            # the broker has fenced (a broker restart: tests/integration/test_broker_restart.py)
            await self.producer.commit(offsets, group_metadata)
            await self.changelog.deliver()      # delivered: serves their reports, the offsets
            await self.publisher.flush()
        except BaseException:
            await self._abandon()
            raise

    async def _abandon(self) -> None:
        """Nothing of the open transaction counts: aborted, and the table's uncommitted
        values forgotten."""
        self.changelog.aborted()
        self.states.forget_uncommitted()
        await self.producer.abort()

    def _write_locally(self, outbox: Outbox) -> None:
        states = self.states
        for w in outbox.state_writes:
            states.put(w.partition, w.key, w.value)
        for partition, clock in outbox.clocks.items():
            states.put(partition, PARTITION_KEY, clock.pack())
        write_local(states, outbox)

    async def deliver_all(self) -> None:
        """The scheduled runs' writes and records: their own transaction, with no offsets
        (their RocksDB writes were made as they went)."""
        await self._commit({})
        self.changelog.committed()

    async def deliver_records(self) -> None:
        await self.deliver_all()
