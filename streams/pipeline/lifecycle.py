"""The life of micro-batches and of the checkpoint that commits them (the write-back state path).

    take ──► track (in flight) ──► compute into the open checkpoint ──┬─► rebalanced: drop
                                   (under the lock; users dirty)      └─► kept
    commit (under the lock, once the previous commit has delivered)
                             ┬─► the previous delivery failed: drop (the failure is told
                             │   to `on_delivery_failed`: the worker restarts)
                             ├─► rebalanced since it opened: drop
                             ├─► fenced: emit nothing, not acked (they come again after the
                             │   rejoin the fence asks for)
                             └─► flush the dirty users, emit the states ──► deliver (the
                                 states; fenced meanwhile: no records, not acked; else the
                                 records) ──► observers ──► ack every batch of it

A checkpoint is what one commit covers: the batches computed since the last commit (they stay
in flight, so Faust neither commits their offsets nor finishes a rebalance without them) and the
outbox of their outputs. Each user's state, profile and closed days are written and published
once per commit, however many batches touched them (streams.pipeline.batch_update). The agent
commits after a batch when
- nothing more is waiting in the feed (it has caught up: latency first), or
- `real_time_update.commit_interval` seconds have passed since the checkpoint's first batch, or
- `real_time_update.max_dirty_users` users are dirty, or
- a rebalance has begun (it waits for every message in flight: what it revokes is flushed
  first; the batches of a checkpoint were all computed before the rebalance began);
and, while the feed is empty with a checkpoint open, within COMMIT_POLL seconds. Whoever else
takes the pipeline lock (`others_lock`: scheduled runs, the quality scan, backups) commits the
open checkpoint first, so the table holds every state they read.

A batch taken before a rebalance began and not computed yet emits nothing and is not acked. A
rebalance that begins while a batch computes drops the whole checkpoint (its states were
advanced in place): nothing of it is emitted or acked, and its events come again to whoever
owns their partitions, applied to the last flushed states, as after a crash.

Everything the lifecycle needs of Faust, the producers and the feature code comes through the
small protocols below, so it runs in unit tests without a broker
(tests/unit/streams/test_lifecycle.py); the Faust-backed parts are
streams.faust_compat.group.FaustGroup (the group side), streams.pipeline.batch_update.BatchUpdate
(the work) and streams.pipeline.outputs.ProducerOutputs.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from streams.monitoring.counters import WorkerCounts
from streams.pipeline.outbox import Outbox, Publication

log = logging.getLogger(__name__)

COMMIT_POLL = 0.05      # seconds an open checkpoint waits for more events before it commits


class GroupSide(Protocol):
    """The consumer group as a batch sees it (streams.faust_compat.group.FaustGroup). A batch
    is whatever the source gives (streams.io.raw_batch.RawBatch); only its length is read here."""
    @property
    def rebalancing(self) -> bool: ...

    @property
    def rebalance_count(self) -> int: ...

    @property
    def generation(self) -> int | None: ...

    def track(self, batch: Any) -> None: ...

    def untrack(self, batches: list[Any]) -> None: ...

    def ack(self, batches: list[Any]) -> None: ...


class BatchWork(Protocol):
    """The compute and flush steps (streams.pipeline.batch_update.BatchUpdate)."""
    def compute(self, batch: Any, outbox: Outbox) -> None:
        """Advance the batch's users in place (they become dirty); stage dead letters."""
        ...

    def flush(self, outbox: Outbox) -> None:
        """Stage every dirty user's outputs and state write (they become clean)."""
        ...

    @property
    def dirty_count(self) -> int: ...

    def discard(self) -> None:
        """Outputs are dropped: forget whatever was advanced in place (dirty and cached
        states)."""
        ...


class Outputs(Protocol):
    """Where an outbox goes (streams.pipeline.outputs.ProducerOutputs)."""
    async def emit(self, outbox: Outbox) -> None: ...

    async def deliver(self, outbox: Outbox, still_ours: Callable[[], bool],
                      batches: list[Any]) -> bool:
        """The states, then, unless `still_ours()` says otherwise, the records (True);
        `batches`: the checkpoint's (exactly_once_v2 commits their offsets with them)."""
        ...


class Fencing(Protocol):
    """streams.pipeline.fencing.Fence"""
    def fenced(self, started: float, n_events: int, generation: int | None,
               rebalances: int | None = None) -> bool: ...

    def delivered(self, generation: int | None) -> None: ...


class BatchSource(Protocol):
    """streams.io.event_feed.EventFeed"""
    async def take(self, max_n: int, within: float) -> Any: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True)
class CommitPolicy:
    """When the agent commits besides when it has caught up (real_time_update)."""
    interval: float = 1.0           # seconds since the checkpoint's first batch (0: every batch)
    max_dirty: int = 20000          # dirty users


@dataclass
class Checkpoint:
    """What one commit covers."""
    taken_in: int | None        # the group's rebalance count when its first batch was taken
    generation: int | None = None   # the consumer generation its first batch was computed in
    batches: list[Any] = field(default_factory=list)
    events: int = 0                 # records in its batches
    outbox: Outbox = field(default_factory=Outbox)
    started: float = field(default_factory=time.monotonic)   # its first compute began


class Rebalanced(Exception):
    """The checkpoint's batches were taken before a rebalance that is over (or beyond the one
    under way): its partitions may be another worker's by now, which reads the events again
    from the last commit, and a late state write of ours would land in that worker's
    changelog after its own."""


class BatchLifecycle:
    def __init__(self, group: GroupSide, work: BatchWork, outputs: Outputs, fence: Fencing,
                 counts: WorkerCounts,
                 on_delivered: Callable[[list[Publication]], None] | None = None,
                 policy: CommitPolicy = CommitPolicy(),
                 on_delivery_failed: Callable[[BaseException], None] | None = None,
                 others_wait_delivery: bool = False):
        self.group = group
        self.work = work
        self.outputs = outputs
        self.fence = fence
        self.counts = counts
        self.on_delivered = on_delivered
        self.policy = policy
        # A failed delivery drops every later checkpoint (nothing goes out after a state whose
        # records may be missing), so this worker emits nothing until its events come again
        # from the last commit: the worker's restart (streams.pipeline.profile_pipeline).
        self.on_delivery_failed = on_delivery_failed
        self.lock = asyncio.Lock()      # the agent's; others take `others_lock`
        # exactly_once_v2: the producer holds one transaction at a time, so whoever else
        # writes waits until the agent's last commit has delivered (its transaction committed)
        self.others_lock = CommittingLock(self, others_wait_delivery)
        self.checkpoint: Checkpoint | None = None
        self.delivery: asyncio.Task[None] | None = None   # the last commit's delivery
        self.delivery_began: float | None = None           # its monotonic start

    # ------------------------------------------------------------------ the agent's loop

    async def run(self, source: BatchSource, batch_size: int) -> None:
        """Take, compute, commit when due; one commit delivering while the next computes (the
        next commit emits once it has delivered)."""
        while True:
            batch = await self._take(source, batch_size)
            if batch is None:           # nothing came within COMMIT_POLL: commit what is open
                await self._commit_and_pace()
                continue
            self.group.track(batch)
            await self.process(batch, self.group.rebalance_count)
            if self._commit_due(source):
                await self._commit_and_pace()

    async def _take(self, source: BatchSource, batch_size: int) -> Any | None:
        # what is there, at once: under load the next batch fills while this one runs
        if self.checkpoint is None:
            return await source.take(batch_size, within=0)
        try:
            return await asyncio.wait_for(source.take(batch_size, within=0), COMMIT_POLL)
        except asyncio.TimeoutError:
            return None

    def _commit_due(self, source: BatchSource) -> bool:
        cp = self.checkpoint
        if cp is None:
            return False
        # caught up while the previous commit delivers: compute on instead of waiting for it
        # (a commit emits once that delivery is done), so more goes into this one
        caught_up = not len(source) and (self.delivery is None or self.delivery.done())
        return (caught_up or self.group.rebalancing
                or time.monotonic() - cp.started >= self.policy.interval
                or self.work.dirty_count >= self.policy.max_dirty)

    async def _commit_and_pace(self) -> None:
        before = self.delivery
        await self.commit()
        if before is not None and (before is not self.delivery or before.done()):
            await before        # raises if its delivery failed (the agent restarts, nothing
                                # acked; the commit after it emitted nothing)

    # ------------------------------------------------------------------ batches

    async def process(self, batch: Any, taken_in: int | None = None) -> None:
        """Compute a (tracked) batch into the open checkpoint, or drop it when a rebalance
        began since it was taken (`taken_in`: the group's rebalance count then; None: not
        checked)."""
        try:
            async with self.lock:
                self._compute(batch, taken_in)
        except BaseException:
            self.group.untrack([batch])         # not acked: the events come again
            raise

    def _rebalanced(self, taken_in: int | None) -> bool:
        return taken_in is not None and (
            self.group.rebalancing or self.group.rebalance_count != taken_in)

    def _compute(self, batch: Any, taken_in: int | None) -> None:
        """(Lock held.)"""
        if self._rebalanced(taken_in):
            self.counts.rebalance_dropped_batches += 1
            self.group.untrack([batch])
            return
        cp = self.checkpoint
        if cp is None:
            cp = self.checkpoint = Checkpoint(taken_in, self.group.generation)
        try:
            self.work.compute(batch, cp.outbox)
        except BaseException:
            self._drop(cp, extra=[batch])       # states were advanced in place
            raise
        cp.batches.append(batch)
        cp.events += len(batch)
        if self._rebalanced(taken_in):          # began while the batch computed
            self._drop(cp)

    def _drop(self, cp: Checkpoint, extra: list[Any] | tuple[Any, ...] = ()) -> None:
        """Nothing of the checkpoint is emitted and its batches are not acked (their events
        come again to whoever owns their partitions)."""
        self.counts.rebalance_dropped_batches += 1
        self.work.discard()
        self.group.untrack([*cp.batches, *extra])
        if self.checkpoint is cp:
            self.checkpoint = None

    # ------------------------------------------------------------------ commits

    async def commit(self) -> asyncio.Task[None] | None:
        """Commit the open checkpoint (takes the lock); returns its delivery task (None: none
        was open)."""
        async with self.lock:
            return await self.commit_locked()

    async def commit_locked(self) -> asyncio.Task[None] | None:
        """(Lock held.) Once the previous commit has delivered, flush and emit the open
        checkpoint unless that delivery failed or a rebalance that is over (or beyond the one
        under way) began since it opened (dropped) or the worker was fenced (emits nothing,
        acked); its delivery then acks it."""
        cp = self.checkpoint
        if cp is None:
            return None
        previous = self.delivery
        if previous is not None and not previous.done():
            # No state goes out before every earlier checkpoint's records are delivered: a
            # crash can then lose the records of one commit only, the one whose states the next
            # owner sends again; with two, a version would go unpublished (docs/RELIABILITY.md)
            await asyncio.wait([previous])
        self.checkpoint = None
        if previous is not None and (previous.cancelled() or previous.exception() is not None):
            # not emitted, not acked: its events come again, after the earlier ones
            self.work.discard()
            self.group.untrack(cp.batches)
            return None
        group = self.group
        if cp.taken_in is not None:
            count = group.rebalance_count
            in_revoke = group.rebalancing and count == cp.taken_in + 1
            if group.generation != cp.generation or (count != cp.taken_in and not in_revoke):
                self._drop(cp)
                return None
        if self.fence.fenced(cp.started, cp.events, group.generation,
                             group.rebalance_count):
            # Not acked: this worker may still be a member (the broker out of reach, not past
            # the session timeout), and an ack would let its position commit past events whose
            # outputs were dropped. The rejoin the fence asked for seeks back to the commit.
            self.work.discard()
            group.untrack(cp.batches)
            return None
        self.work.flush(cp.outbox)
        await self.outputs.emit(cp.outbox)
        emitted: list[Publication] | None = cp.outbox.publications
        self.counts.commits += 1
        task = asyncio.create_task(self._deliver(cp, emitted, self.delivery,
                                                 group.generation, group.rebalance_count))
        task.add_done_callback(self._delivery_done)
        self.delivery, self.delivery_began = task, time.monotonic()
        return task

    def status(self) -> dict[str, Any]:
        """Where the agent's work stands (`/stats` → lifecycle): the open checkpoint's events
        and age, how long the last commit's delivery has been running (None: done), and
        whether the pipeline lock is held."""
        now = time.monotonic()
        cp, delivery, began = self.checkpoint, self.delivery, self.delivery_began
        delivering = None if delivery is None or delivery.done() or began is None \
            else round(now - began, 3)
        return {"open_events": cp.events if cp is not None else 0,
                "open_seconds": round(now - cp.started, 3) if cp is not None else None,
                "delivering_seconds": delivering,
                "lock_held": self.lock.locked()}

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is None:
            return
        log.error("delivering a checkpoint failed; its events stay unacked and come again",
                  exc_info=exc)
        if self.on_delivery_failed is not None:
            self.on_delivery_failed(exc)

    async def commit_staged(self, stage: Callable[[], None]) -> asyncio.Task[None] | None:
        """(Lock held.) Commit the open checkpoint, then a checkpoint of no events whose dirty
        users `stage` puts in the state cache (held publishes going out,
        streams.pipeline.holdback); returns its delivery task (None: dropped)."""
        await self.commit_locked()
        cp = self.checkpoint = Checkpoint(self.group.rebalance_count, self.group.generation)
        try:
            stage()
        except BaseException:
            self._drop(cp)
            raise
        return await self.commit_locked()

    async def close(self) -> None:
        """Commit what is open and wait for every delivery (shutdown)."""
        await self.commit()
        if self.delivery is not None:
            await self.delivery

    async def _deliver(self, cp: Checkpoint, emitted: list[Publication] | None,
                       after: asyncio.Task[None] | None, generation: int | None,
                       rebalances: int | None) -> None:
        batches = cp.batches

        def still_ours() -> bool:
            # The process may have been paused, or cut off from the coordinator, while the
            # states were on their way (a SIGSTOP in the changelog drain): its records would
            # land after a new owner's. Not acked: the states say what was published, and the
            # redelivery after the rejoin sends it again (streams.pipeline.batch_update).
            return not self.fence.fenced(cp.started, cp.events, generation, rebalances)
        try:
            if after is not None:
                await after             # acks stay in order; a failure there stops this one
            if emitted is not None and \
                    not await self.outputs.deliver(cp.outbox, still_ours, batches):
                self.group.untrack(batches)
                return
        except BaseException:
            # Not acked, so never committed: the events come again after a restart. Untracked,
            # so a rebalance does not wait for them.
            self.group.untrack(batches)
            raise
        if emitted is not None:
            if self.on_delivered is not None:
                self.on_delivered(emitted)
            self.fence.delivered(self.group.generation)
        self.group.ack(batches)


class CommittingLock:
    """The pipeline lock as everyone but the agent takes it (scheduled runs, the quality scan,
    backups): the open checkpoint is committed first, so the table holds every state they read
    and their writes land after the agent's."""

    def __init__(self, lifecycle: BatchLifecycle, wait_delivery: bool = False):
        self.lifecycle = lifecycle
        self.wait_delivery = wait_delivery

    async def __aenter__(self) -> None:
        lock = self.lifecycle.lock
        await lock.acquire()
        try:
            delivery = await self.lifecycle.commit_locked() or self.lifecycle.delivery
            if self.wait_delivery and delivery is not None:
                await delivery      # raises if it failed (the worker restarts)
        except BaseException:
            lock.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.lifecycle.lock.release()

    def locked(self) -> bool:
        return self.lifecycle.lock.locked()
