"""The life of a micro-batch: take, track, compute, fence, drop on rebalance, emit, deliver, ack.

    take ──► track (in flight) ──► compute into a checkpoint's outbox ─┬─► rebalanced: drop
                                   (under the lock)                    ├─► fenced: emit nothing
                                                                       └─► commit: emit
    commit ──► deliver (after the previous commit's delivery) ──► observers ──► ack

A checkpoint is what one commit covers: the messages whose offsets its delivery makes
committable and the outbox of their outputs. Today every batch is its own checkpoint. A
write-back state path (issue 14) keeps one open across batches (users marked dirty instead of
state writes in the outbox) and commits on an interval, a cap on dirty users, or before a
rebalance revokes their partitions; `commit` and `drop` stay as they are.

Everything the lifecycle needs of Faust, the producers and the feature code comes through the
small protocols below, so it runs in unit tests without a broker (tests/unit/test_lifecycle.py);
the Faust-backed parts are streams.faust_compat.group.FaustGroup (the group side),
streams.pipeline.batch_update.BatchUpdate (the work) and streams.pipeline.outputs.ProducerOutputs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from streams.counters import WorkerCounts
from streams.pipeline.outbox import Outbox, Publication

log = logging.getLogger(__name__)


class GroupSide(Protocol):
    """The consumer group as a batch sees it (streams.faust_compat.group.FaustGroup)."""
    @property
    def rebalancing(self) -> bool: ...

    @property
    def rebalance_count(self) -> int: ...

    @property
    def generation(self) -> int | None: ...

    def track(self, messages: list[Any]) -> None: ...

    def untrack(self, messages: list[Any]) -> None: ...

    def ack(self, messages: list[Any]) -> None: ...


class BatchWork(Protocol):
    """The compute step (streams.pipeline.batch_update.BatchUpdate)."""
    def compute(self, messages: list[Any], outbox: Outbox) -> None: ...

    def discard(self) -> None:
        """Outputs are dropped: forget whatever the compute advanced in place (cached
        states)."""
        ...


class Outputs(Protocol):
    """Where an outbox goes (streams.pipeline.outputs.ProducerOutputs)."""
    async def emit(self, outbox: Outbox) -> None: ...

    async def deliver(self) -> None: ...


class Fencing(Protocol):
    """streams.pipeline.fencing.Fence"""
    def fenced(self, started: float, n_events: int, generation: int | None) -> bool: ...

    def delivered(self, generation: int | None) -> None: ...


class BatchSource(Protocol):
    """streams.event_feed.EventFeed"""
    async def take(self, max_n: int, within: float) -> list[Any]: ...


@dataclass
class Checkpoint:
    """What one commit covers."""
    taken_in: int | None        # the group's rebalance count when its first batch was taken
    messages: list[Any] = field(default_factory=list)
    outbox: Outbox = field(default_factory=Outbox)
    started: float = field(default_factory=time.monotonic)   # its first compute began


class Rebalanced(Exception):
    """The checkpoint's batches were taken before a rebalance began: its partitions may be
    another worker's by now, which reads the events again from the last commit, and a late
    state write of ours would land in that worker's changelog after its own."""


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("delivering a batch failed; its events stay unacked and come again",
                  exc_info=task.exception())


class BatchLifecycle:
    def __init__(self, group: GroupSide, work: BatchWork, outputs: Outputs, fence: Fencing,
                 lock: asyncio.Lock, counts: WorkerCounts,
                 on_delivered: Callable[[list[Publication]], None] | None = None):
        self.group = group
        self.work = work
        self.outputs = outputs
        self.fence = fence
        self.lock = lock                # scheduled runs change the same states between batches
        self.counts = counts
        self.on_delivered = on_delivered

    async def run(self, source: BatchSource, batch_size: int) -> None:
        """The agent's loop: one batch delivering while the next computes."""
        delivering: asyncio.Task[None] | None = None
        while True:
            # what is there, at once: under load the next batch fills while this one runs
            batch = await source.take(batch_size, within=0)
            self.group.track(batch)
            taken_in = self.group.rebalance_count
            try:
                task = await self.process(batch, after=delivering, taken_in=taken_in)
            except BaseException:
                self.group.untrack(batch)       # see _deliver
                raise
            if delivering is not None:
                await delivering    # raises if its delivery failed (the agent restarts,
            delivering = task       # nothing acked)

    async def process(self, messages: list[Any], after: asyncio.Task[None] | None = None,
                      taken_in: int | None = None) -> asyncio.Task[None]:
        """Compute the batch and hand its outputs to the producers; returns the task that
        delivers them (after the previous batch's delivery `after`) and then acks the batch.
        `taken_in`: the group's rebalance count when the batch was taken (None: not checked).
        """
        checkpoint = Checkpoint(taken_in, list(messages))
        try:
            async with self.lock:
                emitted = await self._compute_and_commit(checkpoint)
        except Rebalanced:
            self.drop(checkpoint)
            return self._deliver_later(checkpoint, None, after, ack=False)
        # fenced (None): nothing emitted, yet acked (the old generation's commit is refused)
        return self._deliver_later(checkpoint, emitted, after, ack=True)

    def drop(self, checkpoint: Checkpoint) -> None:
        """Nothing of the checkpoint is emitted and its messages are not acked (they come
        again to whoever owns their partitions)."""
        self.counts.rebalance_dropped_batches += 1
        self.work.discard()
        self.group.untrack(checkpoint.messages)

    def _rebalanced(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.taken_in is not None and (
            self.group.rebalancing or self.group.rebalance_count != checkpoint.taken_in)

    async def _compute_and_commit(self, checkpoint: Checkpoint) -> list[Publication] | None:
        """(Lock held.) Returns the publications emitted, or None when the batch was fenced."""
        if self._rebalanced(checkpoint):
            raise Rebalanced()
        checkpoint.started = time.monotonic()
        try:
            self.work.compute(checkpoint.messages, checkpoint.outbox)
        except BaseException:
            self.work.discard()             # cached states were advanced in place
            raise
        return await self.commit(checkpoint)

    async def commit(self, checkpoint: Checkpoint) -> list[Publication] | None:
        """(Lock held.) Emit the checkpoint's outbox unless a rebalance began since its first
        batch was taken (Rebalanced) or the worker was fenced (None)."""
        if self._rebalanced(checkpoint):
            raise Rebalanced()
        if self.fence.fenced(checkpoint.started, len(checkpoint.messages),
                             self.group.generation):
            self.work.discard()
            return None
        await self.outputs.emit(checkpoint.outbox)
        return checkpoint.outbox.publications

    def _deliver_later(self, checkpoint: Checkpoint, emitted: list[Publication] | None,
                       after: asyncio.Task[None] | None, ack: bool) -> asyncio.Task[None]:
        task = asyncio.create_task(self._deliver(checkpoint.messages, emitted, after, ack))
        task.add_done_callback(_log_failure)
        return task

    async def _deliver(self, messages: list[Any], emitted: list[Publication] | None,
                       after: asyncio.Task[None] | None, ack: bool) -> None:
        try:
            if after is not None:
                await after             # acks stay in order; a failure there stops this one
            if emitted is not None:     # None: nothing was emitted
                await self.outputs.deliver()
        except BaseException:
            # Not acked, so never committed: the events come again after a restart. Untracked,
            # so a rebalance does not wait for them.
            self.group.untrack(messages)
            raise
        if emitted is not None:
            if self.on_delivered is not None:
                self.on_delivered(emitted)
            self.fence.delivered(self.group.generation)
        if ack:
            self.group.ack(messages)
