"""A raw feed plugged into Faust's consumer, and its batches tracked and acked the way Faust's
streams do it for messages (docs/STREAMING.md, "How events reach the agent").

Faust commits only acked offsets, and a rebalance waits until no message is in flight; both
read the consumer's `_unacked_messages`, which a batch taken outside Faust's streams
(streams.io.raw_batch.RawBatch: columns, no message object per record) has to enter and leave
itself. A batch enters it as one stand-in (`InFlight`), and is acked with the bookkeeping of
Faust's `Consumer.ack` done run by run for the whole batch at once (about 2 µs an event message
by message); `upstream/consumer_ack.txt` is the original that bookkeeping follows
(tests/unit/streams/test_faust_compat.py fails when the installed one differs).
"""
from __future__ import annotations

from pathlib import Path
from time import monotonic
from typing import Any, Iterable, MutableSet, cast

import faust
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from streams.faust_compat.consumer import consumer_hooks
from streams.faust_compat.drain import RawFeed, check_original
from streams.io.raw_batch import RawBatch

ACK_COPY = Path(__file__).with_name("upstream") / "consumer_ack.txt"


def attach_feed(app: faust.App, feed: RawFeed) -> None:
    """Feed `feed.topic`'s messages into `feed` instead of Faust's streams; the feed is
    emptied with Faust's own queues when flow control clears them (a rebalance)."""
    consumer_hooks(app).feed = feed
    # not a FlowControlQueue: cleared as one (the feed has its clear())
    app.flow_control.manage_queue(feed)     # type: ignore[arg-type]


class InFlight:
    """A tracked batch as Faust's consumer sees it: one entry of `_unacked_messages` (a weak
    set: the feed's `_in_flight` keeps it alive), with the two attributes Faust reads of one."""
    __slots__ = ("batch", "acked", "refcount", "__weakref__")

    def __init__(self, batch: RawBatch):
        self.batch = batch
        self.acked = False
        self.refcount = 1

    def __repr__(self) -> str:
        return f"<batch of {len(self.batch)} feed records in flight>"


def _in_flight(app: faust.App) -> dict[int, InFlight]:
    """Tracked batches by their id (kept on the app's consumer)."""
    consumer: Any = app.consumer         # _feed_in_flight is ours, set here
    table = getattr(consumer, "_feed_in_flight", None)
    if table is None:
        table = consumer._feed_in_flight = {}
    return table


def _unacked(app: faust.App) -> MutableSet[Any]:
    """The consumer's `_unacked_messages`: Faust's messages, and our InFlight stand-ins."""
    return cast(FaustConsumer, app.consumer)._unacked_messages


def track(app: faust.App, batch: RawBatch) -> None:
    """Mark a batch as in flight: a rebalance waits for it to be acked. Also tell Faust's
    monitor its partitions are being processed (its stall check reads that, and would log
    "stream has not started processing" for partitions fed this way)."""
    if not len(batch):
        return
    entry = InFlight(batch)
    _in_flight(app)[id(batch)] = entry
    _unacked(app).add(entry)
    monitor = getattr(app, "monitor", None)
    if monitor is not None:
        now = monotonic()
        for run in batch.runs:
            monitor.stream_inbound_time[run.tp] = now


def _release(app: faust.App, batches: Iterable[RawBatch]) -> None:
    """The tracked batches among `batches` leave the in-flight set."""
    table = _in_flight(app)
    unacked = _unacked(app)
    for b in batches:
        entry = table.pop(id(b), None)
        if entry is not None and entry.batch is b:
            entry.acked = True
            unacked.discard(entry)


def untrack(app: faust.App, batches: Iterable[RawBatch]) -> None:
    """The batches failed: no longer in flight, and not acked (their offsets are not
    committed)."""
    _release(app, batches)


def ack(app: faust.App, batches: list[RawBatch]) -> None:
    """The batches' outputs are delivered: their offsets may be committed. Faust's
    `Consumer.ack` for each record, in one pass under its lock, run by run."""
    consumer = cast(FaustConsumer, app.consumer)
    acks_enabled_for = app.topics.acks_enabled_for
    n = 0
    with ack_lock:
        for b in batches:
            if b.acked:
                continue
            b.acked = True
            for run in b.runs:
                tp = run.tp
                if not acks_enabled_for(tp.topic):
                    continue
                committed = consumer._committed_offset[tp]
                acked_index = consumer._acked_index[tp]
                acked_for_tp = consumer._acked[tp]
                for offset in run.offsets:
                    # (acked or committed already: fetched twice after a seek)
                    if (committed is None or offset >= committed) and \
                            offset not in acked_index:
                        acked_index.add(offset)
                        acked_for_tp.append(offset)
                        n += 1
        consumer._n_acked += n
    notify(consumer._waiting_for_ack)
    _release(app, batches)


def check_ack_upstream(stored: str | None = None, installed: str | None = None) -> None:
    """Raise UpstreamChanged, with a diff, when the installed faust-streaming's `Consumer.ack`
    differs from the original `ack` follows."""
    check_original(ACK_COPY, FaustConsumer.ack, "streams/faust_compat/feed.py (ack)", stored,
                   installed)
