"""Our copy of Faust's `Consumer._drain_messages`, changed to hand one topic's messages to a raw
feed (streams.event_feed) instead of Faust's per-event path, and the check that the original
is still the one it was copied from.

The copy keeps the original's structure line for line where it can (the diagnostic flag, the
gap bookkeeping, the commit every N acks, the stop and error branches), so a change upstream is
easy to carry over. What differs, and why (docs/FAUST_INTERNALS.md#drain-loop):
- feed messages are appended to the feed (waiting for room, or for flow to stop) instead of
  being passed to the callback; other topics' messages still go to the callback;
- a feed record fetched before the latest seek is dropped unread and the partitions are sought
  back to their committed offsets (docs/FAUST_INTERNALS.md#seeks);
- a gap on the feed's topic (the client's position jumped past offsets this worker never read)
  is never counted as acked while those offsets are still in the log: the records are dropped
  unread and the partitions sought back to their committed offsets, as for stale ones; only
  offsets retention has deleted count as acked, with a warning;
- it yields to the event loop every 1,000 messages, not 100 (a feed put costs far less than
  Faust's callback, and the loop would otherwise spend its time switching).

`upstream/consumer_drain_messages.txt` is the original this copy was taken from;
`check_upstream` fails with a diff when the installed faust-streaming's differs from it.
"""
from __future__ import annotations

import asyncio
import difflib
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.consumer import Consumer as FaustConsumer
from mode import Service

if TYPE_CHECKING:
    from streams.faust_compat.consumer import ProfilesConsumer

UPSTREAM_COPY = Path(__file__).with_name("upstream") / "consumer_drain_messages.txt"
YIELD_EVERY = 1000


class RawFeed(Protocol):
    """What the drain loop needs of the feed (streams.event_feed.EventFeed)."""
    topic: str
    stale_dropped: int

    def full(self) -> bool: ...

    def put(self, message: Any) -> None: ...

    async def wait_space(self) -> None: ...


async def drain_into_feed(self: ProfilesConsumer, fetcher: Any, feed: RawFeed) -> None:
    # (`self`: written as the method it replaces, so it reads beside the original)
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    flow = self.app.flow_control
    feed_topic = feed.topic
    stale_fetch = self.fetched_before_a_seek
    since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)
            if self.should_stop:
                continue
            stale = 0
            jumped: dict[Any, int] = {}         # feed partitions with a gap: records dropped
            other_stale: dict[Any, list[int]] = {}
            async for tp, message in ait:
                if message.topic == feed_topic and stale_fetch():
                    stale += 1
                    continue
                if message.topic != feed_topic and stale_fetch():
                    # diagnostic only: a changelog record fetched before the latest seek
                    # (docs/RELIABILITY.md, "make chaos, per seed": the standby that missed
                    # records)
                    other_stale.setdefault(tp, []).append(message.offset)
                since_yield += 1
                if since_yield > YIELD_EVERY:
                    await sleep(0)
                    since_yield = 0
                offset = message.offset
                r_offset = get_read_offset(tp)
                if r_offset is not None and offset < r_offset:
                    if message.topic != feed_topic:
                        self.log.warning("%s: record at offset %d dropped as already read (read "
                                         "offset %d)", tp, offset, r_offset)
                    continue                        # already read (Faust drops these too)
                if tp in jumped:
                    jumped[tp] += 1
                    continue
                gap = offset - (r_offset or 0)
                on_feed = message.topic == feed_topic
                # a feed partition's read offset is set at every seek, -1 before offset 0
                # (streams.faust_compat.consumer); Faust's own check skips a read offset of 0
                known = r_offset is not None if on_feed else bool(r_offset)
                if gap > 1 and known and (on_feed or acks_enabled_for(message.topic)):
                    if on_feed:
                        # not expected on the feed's topic (not compacted, no transactions): the
                        # position jumped; acked, the commit would pass over events nobody read
                        if await self.offsets_kept(tp, r_offset + 1):
                            self.log.warning("%s: fetched offset %d after %d: offsets %d..%d "
                                             "were never read; reading again from the "
                                             "committed offset", tp, offset, r_offset,
                                             r_offset + 1, offset - 1)
                            jumped[tp] = 1
                            continue
                        self.log.warning("%s: offsets %d..%d are no longer in the log "
                                         "(retention); Faust counts them as acked", tp,
                                         r_offset + 1, offset - 1)
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                if message.topic == feed_topic:
                    # While flow is stopped (a rebalance) the message is dropped but counted as
                    # read, as Faust's own loop does; the partitions are then sought back to
                    # their committed offsets.
                    active = self.flow_active and flow.is_active()
                    if active and feed.full():
                        await self.wait_first(feed.wait_space(), self.suspend_flow.wait())
                        active = self.flow_active
                    if stale_fetch():
                        stale += 1          # a seek during the awaits above: keep its read offset
                        continue
                    if active:
                        feed.put(message)
                else:
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                set_read_offset(tp, offset)
            unset_flag(flag_consumer_fetching)
            for tp, offsets in other_stale.items():
                self.log.warning("%s: %d records (offsets %d..%d) fetched before the latest seek "
                                 "handed on", tp, len(offsets), offsets[0], offsets[-1])
            if stale or jumped:
                feed.stale_dropped += stale + sum(jumped.values())
                await self.seek_after_stale(stale + sum(jumped.values()))
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


class UpstreamChanged(AssertionError):
    """An installed Faust function is not the one our copy was taken from."""


def installed_source(fn: Any = None) -> str:
    return inspect.getsource(FaustConsumer._drain_messages if fn is None else fn)


def stored_source(path: Path = UPSTREAM_COPY) -> str:
    """The original our copy was taken from (the file's `#` header lines left out)."""
    lines = path.read_text().splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def check_original(path: Path, fn: Any, copy: str, stored: str | None = None,
                   installed: str | None = None) -> None:
    """Raise UpstreamChanged, with a diff, when the installed faust-streaming's `fn` differs
    from the original stored at `path`, which `copy` (where our copy lives) was taken from."""
    stored = stored_source(path) if stored is None else stored
    installed = installed_source(fn) if installed is None else installed
    if stored == installed:
        return
    import faust
    diff = "".join(difflib.unified_diff(
        stored.splitlines(keepends=True), installed.splitlines(keepends=True),
        f"stored original ({path.name})", f"installed faust-streaming {faust.__version__}"))
    raise UpstreamChanged(
        f"faust-streaming's {fn.__qualname__} is not the one {copy} was copied from: carry the "
        "change over (or confirm it does not apply), then store the new original in "
        f"streams/faust_compat/upstream/{path.name}.\n{diff}")


def check_upstream(stored: str | None = None, installed: str | None = None) -> None:
    """Raise UpstreamChanged, with a diff, when the installed faust-streaming's
    `Consumer._drain_messages` differs from the stored original."""
    check_original(UPSTREAM_COPY, FaustConsumer._drain_messages,
                   "streams/faust_compat/drain.py (drain_into_feed)", stored, installed)
