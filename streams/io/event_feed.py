"""Raw batches of one topic's records straight from Faust's consumer, skipping its per-event path.

Faust's per-event path costs more than a micro-batch pipeline can afford
(docs/FAUST_INTERNALS.md#drain-loop). Our consumer (streams.faust_compat) keeps Faust's consumer
(group membership, rebalances, offsets, commits, table recovery and standbys are untouched) and
only changes the drain loop: each partition's records of a fetch are appended to an `EventFeed`
as one run of columns (streams.io.raw_batch), with no message object per record, and the pipeline
takes them in batches (`RawBatch`).

Faust's guarantees are kept the way its streams keep them:
- a batch is tracked as in flight when taken, and its offsets acked after its outputs are
  delivered; Faust commits only acked offsets, and a rebalance waits for what is in flight;
- while flow is stopped (a rebalance) nothing enters the feed, and the feed is emptied with
  Faust's own queues (flow control `clear`); Faust then seeks every assigned partition back to
  its committed offset, so a cleared record is fetched again by whoever owns its partition.

Tracking and acking (streams.faust_compat.feed) and the drain loop (streams.faust_compat.drain)
rely on Faust 0.15 consumer internals; pyproject pins faust-streaming below 0.16.
"""
from __future__ import annotations

import asyncio
from collections import deque
from time import time
from typing import Callable

import faust

from streams.faust_compat.feed import attach_feed
from streams.io.raw_batch import FetchedRun, RawBatch

# One record in this many of a run (its first included) is timed for on_arrival: observing a
# histogram costs about 1.6 µs, 5-10% of an event's whole cost at the rates the pipeline reaches.
ARRIVAL_SAMPLE = 16


class EventFeed:
    """A bounded buffer of one topic's fetched runs (in fetch order), taken in batches."""

    def __init__(self, topic: str, capacity: int):
        self.topic = topic
        self.capacity = capacity        # records
        self.stale_dropped = 0          # records a seek made stale (streams.faust_compat.drain)
        # called with a sampled record's fetch delay: seconds from its Kafka timestamp to here
        self.on_arrival: Callable[[float], None] | None = None
        self._buf: deque[FetchedRun] = deque()
        self._n = 0                     # records buffered
        self._want = 1                  # wake the taker once this many records are here
        self._ready: asyncio.Event | None = None
        self._space: asyncio.Event | None = None

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._ready is None or self._space is None:      # made inside the running loop
            self._ready, self._space = asyncio.Event(), asyncio.Event()
        return self._ready, self._space

    def __len__(self) -> int:
        return self._n

    def full(self) -> bool:
        return self._n >= self.capacity

    def put(self, run: FetchedRun) -> None:
        if not len(run):
            return
        if self.on_arrival is not None:
            now = time()
            for ts in run.timestamps[::ARRIVAL_SAMPLE]:
                if ts is not None:
                    self.on_arrival(now - ts)
        self._buf.append(run)
        self._n += len(run)
        if self._n >= self._want:
            self._events()[0].set()

    async def wait_space(self) -> None:
        _, space = self._events()
        while self.full():
            space.clear()
            await space.wait()

    def clear(self) -> None:
        """Drop every buffered record (flow control: a rebalance is under way)."""
        self._buf.clear()
        self._n = 0
        self._events()[1].set()

    async def take(self, max_n: int, within: float) -> RawBatch:
        """Up to max_n records (the last run split if need be): waits for the first, then up
        to `within` seconds for more."""
        ready, space = self._events()
        while not self._n:
            self._want = 1
            ready.clear()
            await ready.wait()
        if self._n < max_n and within > 0:
            self._want = max_n
            ready.clear()
            try:
                await asyncio.wait_for(ready.wait(), within)
            except asyncio.TimeoutError:
                pass
            self._want = 1
        buf = self._buf
        runs: list[FetchedRun] = []
        n = 0
        while buf and n < max_n:
            run = buf.popleft()
            if n + len(run) > max_n:
                run, *rest = run.cut(max_n - n, max_n)
                buf.extendleft(reversed(rest))
            runs.append(run)
            n += len(run)
        self._n -= n
        space.set()
        return RawBatch(runs)


def install(app: faust.App, topic: str, capacity: int) -> EventFeed:
    """Feed `topic`'s records into the returned EventFeed instead of Faust's streams (the
    app's consumer is streams.faust_compat.consumer.ProfilesConsumer, which create_app
    installs)."""
    feed = EventFeed(topic, capacity)
    attach_feed(app, feed)
    return feed
