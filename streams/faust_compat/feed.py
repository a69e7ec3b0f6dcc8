"""A raw feed plugged into Faust's consumer, and its messages tracked and acked the way Faust's
streams do it (docs/STREAMING.md, "How events reach the agent").

Faust commits only acked offsets, and a rebalance waits until no message is in flight; both
read the consumer's `_unacked_messages`, which a batch of messages taken outside Faust's
streams has to enter and leave itself.
"""
from __future__ import annotations

from time import monotonic
from typing import Any, Iterable

import faust

from streams.faust_compat.consumer import consumer_hooks
from streams.faust_compat.drain import RawFeed


def attach_feed(app: faust.App, feed: RawFeed) -> None:
    """Feed `feed.topic`'s messages into `feed` instead of Faust's streams; the feed is
    emptied with Faust's own queues when flow control clears them (a rebalance)."""
    consumer_hooks(app).feed = feed
    app.flow_control.manage_queue(feed)


def track(app: faust.App, messages: list[Any]) -> None:
    """Mark a batch as in flight: a rebalance waits for it to be acked. Also tell Faust's
    monitor its partitions are being processed (its stall check reads that, and would log
    "stream has not started processing" for partitions fed this way)."""
    app.consumer._unacked_messages.update(messages)
    monitor = getattr(app, "monitor", None)
    if monitor is not None and messages:
        now = monotonic()
        for tp in {m.tp for m in messages}:
            monitor.stream_inbound_time[tp] = now


def untrack(app: faust.App, messages: Iterable[Any]) -> None:
    """The batch failed: no longer in flight, and not acked (its offsets are not committed)."""
    app.consumer._unacked_messages.difference_update(messages)


def ack(app: faust.App, messages: list[Any]) -> None:
    """The batch's outputs are delivered: its offsets may be committed."""
    consumer = app.consumer
    for m in messages:
        consumer.ack(m)
    # Faust's ack leaves a message in flight when its offset was acked or committed already
    # (fetched twice after a seek); a rebalance would wait for it forever.
    consumer._unacked_messages.difference_update(messages)
