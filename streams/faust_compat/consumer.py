"""The Faust consumer of every app on our skeleton (installed by streams.app.create_app).

Three changes to Faust's aiokafka consumer, each switched by `ConsumerHooks` (streams.compat
says which a broker needs); the hooks live on our transport, never on the app:
- **End offsets from fetch responses** (`end_offsets_from_fetch`): on the embedded broker
  ListOffsets(latest) is low (BROKER.md defect 1), so the end offsets table recovery asks for
  are read from a fetch at the newest batch (docs/FAUST_INTERNALS.md#end-offsets).
- **Fetch max wait** (`fetch_max_wait_ms`): Faust passes a fixed 1,500 ms, and the embedded
  broker answers a fetch only after most of its max wait, not when data arrives.
- **Raw batches** (`feed`, streams.event_feed): the feed's topic skips Faust's per-event path
  (streams.faust_compat.drain). A feed record whose fetch overlapped a seek is dropped unread
  and its partitions are sought back to their committed offsets (docs/FAUST_INTERNALS.md#seeks).
And one watch, always on: when the group coordinator last confirmed this worker's membership
(`membership`, streams.faust_compat.membership), attached when the consumer starts and told of
every assignment.

These override Faust 0.15 internals (`AIOKafkaConsumerThread._create_worker_consumer`,
`_highwaters`, `on_start`, `on_partitions_assigned`, `Consumer._drain_messages`); pyproject pins
faust-streaming below 0.16.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.faust_compat.drain import RawFeed, drain_into_feed
from streams.faust_compat.membership import MembershipWatch


@dataclass
class ConsumerHooks:
    """What our consumer needs to know, held by the app's transport."""
    end_offsets_from_fetch: bool
    fetch_max_wait_ms: int | None
    bootstrap: str
    # aiokafka client settings for the fetch that reads end offsets (called when needed)
    client_kwargs: Callable[[], dict[str, Any]] = field(default=dict)
    feed: RawFeed | None = None         # the topic fed raw to streams.event_feed
    # when the group coordinator last confirmed this worker (streams.pipeline.fencing)
    membership: MembershipWatch = field(default_factory=MembershipWatch)


async def fetched_end_offsets(bootstrap: str, client_kwargs: dict, listed: Mapping[Any, int],
                              timeout: float = 90.0) -> dict[Any, int]:
    """The end offset of each partition from a fetch response's high watermark, given the
    (possibly low) ListOffsets answers `listed`: a fetch at listed - 1 (inside the newest
    batch) reports it. Keys are kept as given. Waits out a broker that does not answer for up
    to `timeout` (the app's broker_request_timeout, as Faust's own ListOffsets call does): a
    shorter limit crashed table recovery during a 20 s broker pause."""
    out = dict(listed)
    need = {tp: off for tp, off in listed.items() if off is not None and off > 0}
    if not need:
        return out
    deadline = time.monotonic() + timeout
    while True:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, fetch_max_wait_ms=100,
                                    **client_kwargs)
        try:
            await consumer.start()
            break
        except KafkaConnectionError:        # e.g. every connection cut while bootstrapping
            await consumer.stop()
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)
    try:
        parts = {tp: TopicPartition(tp[0], tp[1]) for tp in need}
        consumer.assign(list(parts.values()))
        for tp, off in need.items():
            consumer.seek(parts[tp], off - 1)
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
    @property
    def hooks(self) -> ConsumerHooks:
        return self.consumer.transport.hooks

    async def on_start(self) -> None:
        await super().on_start()
        self.hooks.membership.attach(self._consumer, self.thread_loop)

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        self.hooks.membership.joined()
        await super().on_partitions_assigned(assigned, generation_id)

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        wait_ms = self.hooks.fetch_max_wait_ms
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms
        return consumer

    async def _highwaters(self, partitions):
        listed = await super()._highwaters(partitions)
        hooks = self.hooks
        if not hooks.end_offsets_from_fetch or self.consumer.in_transaction:
            return listed
        return await fetched_end_offsets(hooks.bootstrap, hooks.client_kwargs(), listed,
                                         float(self.app.conf.broker_request_timeout))


class ProfilesConsumer(faust_aiokafka.Consumer):
    # Seeks run in the consumer thread concurrently with fetches; a feed record whose fetch was
    # asked for before the latest seek ended is stale (docs/FAUST_INTERNALS.md#seeks). The epoch
    # is bumped when a seek starts and when it ends.
    _seek_epoch = 0
    _fetch_epoch = 0

    @property
    def hooks(self) -> ConsumerHooks:
        return self.transport.hooks

    def _new_consumer_thread(self):
        return ProfilesConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions, timeout):
        self._fetch_epoch = self._seek_epoch
        return await super()._getmany(active_partitions, timeout)

    def fetched_before_a_seek(self) -> bool:
        """Whether the records being drained were fetched before the latest seek (stale)."""
        return self._seek_epoch != self._fetch_epoch

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
        feed = self.hooks.feed
        if feed is None:
            return
        fresh = [TopicPartition(tp.topic, tp.partition) for tp in self.assignment()
                 if tp.topic == feed.topic and not self._committed_offset.get(tp)]
        if fresh:
            await self._thread.seek_to_beginning(*fresh)

    async def seek_after_stale(self, dropped: int) -> None:
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
        feed = self.hooks.feed
        if feed is None:
            return await super()._drain_messages(fetcher)
        return await drain_into_feed(self, fetcher, feed)


class ProfilesTransport(faust_aiokafka.Transport):
    Consumer = ProfilesConsumer

    def __init__(self, url, app: faust.App, hooks: ConsumerHooks, loop=None) -> None:
        super().__init__(url, app, loop=loop)
        self.hooks = hooks


def install(app: faust.App, hooks: ConsumerHooks) -> None:
    """Make `app` use ProfilesConsumer (before anything creates the app's consumer)."""
    if app._consumer is not None:
        raise RuntimeError("the app's consumer exists already")
    app.transport = ProfilesTransport(app.conf.broker_consumer, app, hooks)


def consumer_hooks(app: faust.App) -> ConsumerHooks:
    """The hooks `install` gave the app's consumer."""
    transport = app.transport
    if not isinstance(transport, ProfilesTransport):
        raise RuntimeError("the app was not created by streams.app.create_app (its consumer "
                           "is not streams.faust_compat.consumer.ProfilesConsumer)")
    return transport.hooks
