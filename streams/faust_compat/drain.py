"""Our copies of Faust's `Consumer._drain_messages` and `Consumer.getmany`, changed to hand one
topic's records to a raw feed (streams.io.event_feed) as columns instead of Faust's per-event path,
and the check that the originals are still the ones they were copied from.

The copies keep the originals' structure where they can (the diagnostic flag, the gap
bookkeeping, the commit every N acks, the stop and error branches; getmany's checks of flow,
generation and active partitions), so a change upstream is easy to carry over. What differs, and
why (docs/FAUST_INTERNALS.md#drain-loop):
- the fetch is taken partition by partition (`fetched_runs`), not record by record: the feed's
  records become one run of columns per partition (streams.io.raw_batch), checked and appended to
  the feed as a whole (waiting for room, or for flow to stop), with no Faust message made;
  a changelog partition's run goes into its table at once (streams.faust_compat.changelog_restore,
  restored as Faust's recovery loop would, record by record); other topics' records still become
  messages and go to the callback one by one;
- a feed record fetched before the latest seek is dropped unread and the partitions are sought
  back to their committed offsets (docs/FAUST_INTERNALS.md#seeks);
- a gap on the feed's topic (the client's position jumped past offsets this worker never read)
  is never counted as acked while those offsets are still in the log: the records are dropped
  unread and the partitions sought back to their committed offsets, as for stale ones; only
  offsets retention has deleted count as acked, with a warning;
- it yields to the event loop every 1,000 messages, not 100 (a feed put costs far less than
  Faust's callback, and the loop would otherwise spend its time switching).

`upstream/consumer_drain_messages.txt` and `upstream/consumer_getmany.txt` are the originals
these copies were taken from; `check_upstream` fails with a diff when the installed
faust-streaming's differ from them.
"""
from __future__ import annotations

import asyncio
import difflib
import inspect
from bisect import bisect_left
from pathlib import Path
from typing import Any, AsyncIterator, ClassVar, Protocol, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.consumer import Consumer as FaustConsumer
from mode import Service

from streams.faust_compat import changelog_restore
from streams.faust_compat.aiokafka_calls import fetch_position
from streams.io.raw_batch import FetchedRun

UPSTREAM_COPY = Path(__file__).with_name("upstream") / "consumer_drain_messages.txt"
GETMANY_COPY = Path(__file__).with_name("upstream") / "consumer_getmany.txt"
YIELD_EVERY = 1000


class DrainedConsumer(Protocol):
    """What the drain loop uses of its consumer (streams.faust_compat.consumer.ProfilesConsumer):
    Faust's consumer's parts, and the seek checks of ours."""
    app: Any
    transport: Any
    log: Any
    diag: Any
    callback: Any
    flow_active: bool
    consumer_stopped_errors: ClassVar[Any]
    suspend_flow: Any
    _buffered_partitions: Any
    _read_offset: Any
    _commit_every: Any
    _n_acked: int

    @property
    def should_stop(self) -> bool: ...

    @property
    def hooks(self) -> Any: ...

    def _wait_next_records(self, *args: Any, **kwargs: Any) -> Any: ...

    def _to_message(self, *args: Any, **kwargs: Any) -> Any: ...

    def _add_gap(self, *args: Any, **kwargs: Any) -> Any: ...

    def perform_seek(self, *args: Any, **kwargs: Any) -> Any: ...

    def highwater(self, *args: Any, **kwargs: Any) -> Any: ...

    def commit(self, *args: Any, **kwargs: Any) -> Any: ...

    def sleep(self, *args: Any, **kwargs: Any) -> Any: ...

    def wait_first(self, *args: Any, **kwargs: Any) -> Any: ...

    def fetched_before_a_seek(self, *args: Any, **kwargs: Any) -> Any: ...

    def offsets_kept(self, *args: Any, **kwargs: Any) -> Any: ...

    def seek_after_stale(self, *args: Any, **kwargs: Any) -> Any: ...


class RawFeed(Protocol):
    """What the drain loop needs of the feed (streams.io.event_feed.EventFeed)."""
    topic: str
    stale_dropped: int

    def full(self) -> bool: ...

    def put(self, run: FetchedRun) -> None: ...

    async def wait_space(self) -> None: ...


async def fetched_runs(self: DrainedConsumer, timeout: float, feed_topic: str
                       ) -> AsyncIterator[tuple[Any, list[Any]]]:
    """Faust's `Consumer.getmany`, with no message object made: (tp, aiokafka records) of one
    fetch, all of a partition's records at once on `feed_topic` and on the changelog partitions
    the recovery restores in bulk, one record at a time on other topics. Its checks are the
    original's, made before each yield: flow still active, the generation unchanged, the
    partition active (or buffered); its high watermark is tracked for Faust's monitor. (Faust
    makes them before each record; between two records of one run nothing is awaited.)"""
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    if not self.flow_active:
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as ex:
            self.log.warning(f"exception performing seek when flow not active {ex}")
        return
    for tp, tp_records in records.items():
        if not (active_partitions is None or tp in active_partitions
                or tp in self._buffered_partitions):
            continue
        whole = tp.topic == feed_topic or changelog_restore.takes(self.app.tables.recovery, tp)
        runs = [tp_records] if whole else [[r] for r in tp_records]
        for run in runs:
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, run


async def drain_into_feed(self: DrainedConsumer, fetcher: Any, feed: RawFeed) -> None:
    # (`self`: written as the method it replaces, so it reads beside the original)
    callback = self.callback
    to_message = self._to_message
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    flow = self.app.flow_control
    feed_topic = feed.topic
    stale_fetch = self.fetched_before_a_seek
    recovery = self.app.tables.recovery
    since_yield = 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, fetched_runs(self, 1.0, feed_topic))
            await self.sleep(0)
            if self.should_stop:
                continue
            stale = 0
            jumped: dict[Any, int] = {}         # feed partitions with a gap: records dropped
            other_stale: dict[Any, list[int]] = {}
            async for tp, tp_records in ait:
                if tp.topic != feed_topic:
                    if len(tp_records) > 1 or changelog_restore.takes(recovery, tp):
                        # a changelog partition's run, restored at once (fetched_runs)
                        if stale_fetch():
                            other_stale.setdefault(tp, []).extend(r.offset for r in tp_records)
                        since_yield += len(tp_records)
                        if since_yield > YIELD_EVERY:
                            await sleep(0)
                            since_yield = 0
                        await _changelog_run(self, tp, tp_records, recovery)
                        continue
                    for record in tp_records:
                        if stale_fetch():
                            # diagnostic only: a changelog record fetched before the latest
                            # seek (docs/history/CHAOS_RUNS.md, on Tansu: the standby
                            # that missed records)
                            other_stale.setdefault(tp, []).append(record.offset)
                        since_yield += 1
                        if since_yield > YIELD_EVERY:
                            await sleep(0)
                            since_yield = 0
                        await _other_record(self, tp, to_message(tp, record), callback)
                    continue
                if stale_fetch():
                    stale += len(tp_records)
                    continue
                since_yield += len(tp_records)
                if since_yield > YIELD_EVERY:
                    await sleep(0)
                    since_yield = 0
                for run in FetchedRun.of_records(tp, tp_records).contiguous_pieces():
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and run.offsets[0] < r_offset:
                        # already read (Faust drops these too)
                        run = run.tail(bisect_left(run.offsets, r_offset))
                        if not len(run):
                            continue
                    if tp in jumped:
                        jumped[tp] += len(run)
                        continue
                    offset = run.offsets[0]
                    gap = offset - (r_offset or 0)
                    # the read offset is set at every seek, -1 before offset 0
                    # (streams.faust_compat.consumer)
                    if gap > 1 and r_offset is not None:
                        # not expected on the feed's topic (not compacted, no transactions):
                        # the position jumped; acked, the commit would pass over events nobody
                        # read
                        if await self.offsets_kept(tp, r_offset + 1):
                            self.log.warning("%s: fetched offset %d after %d: offsets %d..%d "
                                             "were never read; reading again from the "
                                             "committed offset", tp, offset, r_offset,
                                             r_offset + 1, offset - 1)
                            jumped[tp] = len(run)
                            continue
                        self.log.warning("%s: offsets %d..%d are no longer in the log "
                                         "(retention); Faust counts them as acked", tp,
                                         r_offset + 1, offset - 1)
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    # While flow is stopped (a rebalance) the records are dropped but counted as
                    # read, as Faust's own loop does; the partitions are then sought back to
                    # their committed offsets.
                    active = self.flow_active and flow.is_active()
                    if active and feed.full():
                        await self.wait_first(feed.wait_space(), self.suspend_flow.wait())
                        active = self.flow_active
                    if stale_fetch():
                        stale += len(run)   # a seek during the awaits above: keep its read offset
                        continue
                    if active:
                        feed.put(run)
                    set_read_offset(tp, run.offsets[-1])
            unset_flag(flag_consumer_fetching)
            if self.flow_active and not stale_fetch() and not other_stale:
                # every run of the fetch is applied: partitions that ended in markers are done
                consumer = self.hooks.consumer
                changelog_restore.past_markers(recovery,
                                               lambda tp: fetch_position(consumer, tp))
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


async def _other_record(self: DrainedConsumer, tp: Any, message: Any, callback: Any) -> None:
    """A record of another topic (a table's changelog, during recovery or for a standby): the
    original loop's steps for one message, which goes to Faust's callback."""
    offset = message.offset
    r_offset = self._read_offset[tp]
    if r_offset is not None and offset < r_offset:
        self.log.warning("%s: record at offset %d dropped as already read (read offset %d)",
                         tp, offset, r_offset)
        return
    gap = offset - (r_offset or 0)
    if gap > 1 and r_offset and self.app.topics.acks_enabled_for(message.topic):
        await self._add_gap(tp, r_offset + 1, offset)
    commit_every = self._commit_every
    if commit_every is not None and self._n_acked >= commit_every:
        self._n_acked = 0
        await self.commit()
    await self.wait_first(callback(message), self.suspend_flow.wait())
    self._read_offset[tp] = offset


async def _changelog_run(self: DrainedConsumer, tp: Any, records: list[Any],
                         recovery: Any) -> None:
    """A run of a changelog partition's records (streams.faust_compat.changelog_restore): the
    steps `_other_record` takes for each record, once for the run; the records go into the
    table at once instead of to Faust's callback one by one."""
    r_offset = self._read_offset[tp]
    if r_offset is not None and records[0].offset < r_offset:
        kept = records[bisect_left([r.offset for r in records], r_offset):]
        self.log.warning("%s: records at offsets %d..%d dropped as already read (read offset "
                         "%d)", tp, records[0].offset, records[-1 - len(kept)].offset, r_offset)
        records = kept
        if not records:
            return
    commit_every = self._commit_every
    if commit_every is not None and self._n_acked >= commit_every:
        self._n_acked = 0
        await self.commit()
    if not (self.flow_active and changelog_restore.takes(recovery, tp)):
        return          # a rebalance began during the commit: the recovery seeks again
    to_message = self._to_message
    self.hooks.changelog_restored += changelog_restore.restore_run(
        recovery, tp, [to_message(tp, r) for r in records], self.app.create_event)
    self._read_offset[tp] = records[-1].offset


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


def check_getmany_upstream(stored: str | None = None, installed: str | None = None) -> None:
    """Raise UpstreamChanged, with a diff, when the installed faust-streaming's
    `Consumer.getmany` differs from the stored original `fetched_runs` follows."""
    check_original(GETMANY_COPY, FaustConsumer.getmany,
                   "streams/faust_compat/drain.py (fetched_runs)", stored, installed)
