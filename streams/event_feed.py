"""Raw batches of one topic's messages straight from Faust's consumer, skipping its per-event path.

Faust's per-event path costs more than a micro-batch pipeline can afford
(docs/FAUST_INTERNALS.md#drain-loop). Our consumer (streams.faust_compat) keeps Faust's consumer
(group membership, rebalances, offsets, commits, table recovery and standbys are untouched) and
only changes the drain loop: messages of the feed's topic are appended to an `EventFeed`
instead, and the pipeline takes them in batches.

Faust's guarantees are kept the way its streams keep them:
- a batch's messages are tracked as in flight when taken, and acked after its outputs are
  delivered; Faust commits only acked offsets, and a rebalance waits for in-flight messages;
- while flow is stopped (a rebalance) nothing enters the feed, and the feed is emptied with
  Faust's own queues (flow control `clear`); Faust then seeks every assigned partition back to
  its committed offset, so a cleared message is fetched again by whoever owns its partition.

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

# One message in this many is timed for on_arrival: observing a histogram costs about 1.6 µs,
# 5-10% of an event's whole cost at the rates the pipeline reaches.
ARRIVAL_SAMPLE = 16


class EventFeed:
    """A bounded buffer of one topic's raw messages (in fetch order), taken in batches."""

    def __init__(self, topic: str, capacity: int):
        self.topic = topic
        self.capacity = capacity
        self.stale_dropped = 0          # records a seek made stale (streams.faust_compat.drain)
        # called with a sampled message's fetch delay: seconds from its Kafka timestamp to here
        self.on_arrival: Callable[[float], None] | None = None
        self._arrived = 0
        self._buf: deque = deque()
        self._want = 1                  # wake the taker once this many messages are here
        self._ready: asyncio.Event | None = None
        self._space: asyncio.Event | None = None

    def _events(self) -> tuple[asyncio.Event, asyncio.Event]:
        if self._ready is None:         # created inside the running loop
            self._ready, self._space = asyncio.Event(), asyncio.Event()
        return self._ready, self._space

    def __len__(self) -> int:
        return len(self._buf)

    def full(self) -> bool:
        return len(self._buf) >= self.capacity

    def put(self, message) -> None:
        if self.on_arrival is not None:
            self._arrived += 1
            if self._arrived % ARRIVAL_SAMPLE == 0:
                self.on_arrival(time() - message.timestamp)
        self._buf.append(message)
        if len(self._buf) >= self._want:
            self._events()[0].set()

    async def wait_space(self) -> None:
        _, space = self._events()
        while self.full():
            space.clear()
            await space.wait()

    def clear(self) -> None:
        """Drop every buffered message (flow control: a rebalance is under way)."""
        self._buf.clear()
        self._events()[1].set()

    async def take(self, max_n: int, within: float) -> list:
        """Up to max_n messages: waits for the first, then up to `within` seconds for more."""
        ready, space = self._events()
        while not self._buf:
            self._want = 1
            ready.clear()
            await ready.wait()
        if len(self._buf) < max_n and within > 0:
            self._want = max_n
            ready.clear()
            try:
                await asyncio.wait_for(ready.wait(), within)
            except asyncio.TimeoutError:
                pass
            self._want = 1
        buf = self._buf
        batch = [buf.popleft() for _ in range(min(max_n, len(buf)))]
        space.set()
        return batch


def install(app: faust.App, topic: str, capacity: int) -> EventFeed:
    """Feed `topic`'s messages into the returned EventFeed instead of Faust's streams (the
    app's consumer is streams.faust_compat.consumer.ProfilesConsumer, which create_app
    installs)."""
    feed = EventFeed(topic, capacity)
    attach_feed(app, feed)
    return feed
