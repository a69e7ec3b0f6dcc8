"""The Faust consumer of every app on our skeleton (installed by streams.app.create_app).

Three changes to Faust's aiokafka consumer, each switched by the app (streams.compat):
- **End offsets from fetch responses** (`app.end_offsets_from_fetch`). On the embedded broker
  ListOffsets(latest) answers the base offset of the newest record batch + 1 (BROKER.md defect
  1), so Faust's table recovery, which reads changelog end offsets that way, would stop early
  or raise ConsistencyError whenever a changelog partition ends in a multi-record batch. The
  high watermark in fetch responses is right, so the end offsets recovery asks for are read
  from a fetch at the newest batch. That lets the changelog producer batch normally (the
  earlier cure, one record per produce batch, cost a produce round trip per state write
  per partition).
- **Fetch max wait** (`app.fetch_max_wait_ms`): Faust passes a fixed 1,500 ms, and the embedded
  broker answers a fetch only after most of its max wait, not when data arrives.
- **Raw batches** (`app.event_feed`, streams.event_feed): the feed's topic skips Faust's
  per-event path. A feed record whose fetch overlapped a seek is dropped unread and its
  partitions are sought back to their committed offsets (see `ProfilesConsumer._seek_epoch`).

These override Faust 0.15 internals (`AIOKafkaConsumerThread._create_worker_consumer` and
`_highwaters`, `Consumer._drain_messages`); pyproject pins faust-streaming below 0.16.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Mapping, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service


async def fetched_end_offsets(bootstrap: str, client_kwargs: dict, listed: Mapping[Any, int],
                              timeout: float = 15.0) -> dict[Any, int]:
    """The end offset of each partition from a fetch response's high watermark, given the
    (possibly low) ListOffsets answers `listed`: a fetch at listed - 1 (inside the newest
    batch) reports it. Keys are kept as given."""
    out = dict(listed)
    need = {tp: off for tp, off in listed.items() if off is not None and off > 0}
    if not need:
        return out
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100,
                                **client_kwargs)
    await consumer.start()
    try:
        parts = {tp: TopicPartition(tp[0], tp[1]) for tp in need}
        consumer.assign(list(parts.values()))
        for tp, off in need.items():
            consumer.seek(parts[tp], off - 1)
        deadline = time.monotonic() + timeout
        while True:
            await consumer.getmany(timeout_ms=200, max_records=1)
            seen = {tp: consumer.highwater(part) for tp, part in parts.items()}
            if all(hw is not None for hw in seen.values()):
                break
            if time.monotonic() > deadline:
                missing = sorted(str(tp) for tp, hw in seen.items() if hw is None)
                raise RuntimeError(f"no fetch response for {missing} in {timeout:.0f} s: "
                                   "cannot tell where their changelogs end")
        for tp, hw in seen.items():
            out[tp] = max(hw, need[tp])
        return out
    finally:
        await consumer.stop()


class ProfilesConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        wait_ms = getattr(self.app, "fetch_max_wait_ms", None)
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms
        return consumer

    async def _highwaters(self, partitions):
        listed = await super()._highwaters(partitions)
        if not getattr(self.app, "end_offsets_from_fetch", False) or self.consumer.in_transaction:
            return listed
        cfg = self.app.profile_config
        from streams.kafka_security import client_kwargs
        return await fetched_end_offsets(cfg.kafka.bootstrap_servers, client_kwargs(cfg),
                                         listed)


class ProfilesConsumer(faust_aiokafka.Consumer):
    # Seeks (Faust seeks every partition back to its committed offset at the end of each
    # rebalance) run in the consumer thread concurrently with fetches. Records fetched before a
    # seek but handled after it are stale: the seek also reset Faust's read offset, so the
    # first of them looks like a jump, Faust records the offsets skipped as a "gap", counts
    # them acked, and the next commit passes over events nobody processed (the short chaos
    # run lost up to 5,000 events that way). So the epoch is bumped when a seek starts and when
    # it ends; a feed record whose fetch was asked for in an earlier epoch is dropped unread,
    # and the drain loop seeks again, which fetches it again from the committed offset.
    _seek_epoch = 0
    _fetch_epoch = 0

    def _new_consumer_thread(self):
        return ProfilesConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions, timeout):
        self._fetch_epoch = self._seek_epoch
        return await super()._getmany(active_partitions, timeout)

    async def perform_seek(self) -> None:
        self._seek_epoch += 1
        try:
            await super().perform_seek()
            await self._seek_uncommitted_feed_partitions()
        finally:
            self._seek_epoch += 1

    async def seek(self, partition, offset: int) -> None:
        self._seek_epoch += 1
        try:
            await super().seek(partition, offset)
        finally:
            self._seek_epoch += 1

    async def _seek_uncommitted_feed_partitions(self) -> None:
        """Faust's seek to committed offsets leaves a partition without a commit wherever the
        client is; put the feed's at the start (the app's auto_offset_reset is "earliest"),
        so records dropped as stale are fetched again there too."""
        feed = getattr(self.app, "event_feed", None)
        if feed is None:
            return
        fresh = [TopicPartition(tp.topic, tp.partition) for tp in self.assignment()
                 if tp.topic == feed.topic and not self._committed_offset.get(tp)]
        if fresh:
            await self._thread.seek_to_beginning(*fresh)

    async def _seek_after_stale(self, dropped: int) -> None:
        """The client's position is past the dropped records: until something seeks, they
        would never come again. A rebalance ends with a seek of its own."""
        self.log.info("dropped %d fetched records that a seek made stale; seeking back to the "
                      "committed offsets", dropped)
        generation = self.app.consumer_generation_id
        while not self.should_stop:
            try:
                await asyncio.wait_for(self.perform_seek(),
                                       self.app.conf.broker_request_timeout)
                return
            except Exception as exc:
                if self.app.rebalancing or self.app.consumer_generation_id != generation:
                    self.log.info("seeking back after stale records: %r; the rebalance under "
                                  "way seeks when it ends", exc)
                    return
                self.log.warning("seeking back after stale records failed: %r; again in 1 s",
                                 exc)
                await self.sleep(1.0)

    async def _drain_messages(self, fetcher: Any) -> None:
        feed = getattr(self.app, "event_feed", None)   # streams.event_feed
        if feed is None:
            return await super()._drain_messages(fetcher)
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        flow = self.app.flow_control
        feed_topic = feed.topic
        sleep = asyncio.sleep
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if self.should_stop:
                    continue
                stale = 0
                async for tp, message in ait:
                    if message.topic == feed_topic and self._seek_epoch != self._fetch_epoch:
                        stale += 1
                        continue
                    since_yield += 1
                    if since_yield > 1000:
                        await sleep(0)
                        since_yield = 0
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue                        # already read (Faust drops these too)
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        if message.topic == feed_topic:
                            # not expected on the feed's topic (not compacted, no transactions)
                            self.log.warning("%s: offsets %d..%d were never fetched; Faust "
                                             "counts them as acked", tp, r_offset + 1,
                                             offset - 1)
                        await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if message.topic == feed_topic:
                        # While flow is stopped (a rebalance) the message is dropped but counted
                        # as read, as Faust's own loop does; the partitions are then sought back
                        # to their committed offsets.
                        active = self.flow_active and flow.is_active()
                        if active and feed.full():
                            await self.wait_first(feed.wait_space(), self.suspend_flow.wait())
                            active = self.flow_active
                        if self._seek_epoch != self._fetch_epoch:
                            stale += 1      # a seek during the awaits above: keep its read offset
                            continue
                        if active:
                            feed.put(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                if stale:
                    feed.stale_dropped += stale
                    await self._seek_after_stale(stale)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise


class ProfilesTransport(faust_aiokafka.Transport):
    Consumer = ProfilesConsumer


def install(app: faust.App, end_offsets_from_fetch: bool, fetch_max_wait_ms: int | None) -> None:
    """Make `app` use ProfilesConsumer (before anything creates the app's consumer)."""
    if app._consumer is not None:
        raise RuntimeError("the app's consumer exists already")
    app.end_offsets_from_fetch = end_offsets_from_fetch
    app.fetch_max_wait_ms = fetch_max_wait_ms
    app.event_feed = None
    app.transport = ProfilesTransport(app.conf.broker_consumer, app)
