"""The Faust consumer of every app on our skeleton (installed by streams.app.create_app).

Three changes to Faust's aiokafka consumer, the first two set by `ConsumerHooks`; the hooks live
on our transport, never on the app:
- **Fetch max wait** (`fetch_max_wait_ms`, `kafka.client.fetch_max_wait_ms`): Faust passes a
  fixed 1,500 ms.
- **Raw batches** (`feed`, streams.io.event_feed): the feed's topic skips Faust's per-event path
  (streams.faust_compat.drain). A feed record whose fetch overlapped a seek is dropped unread
  and its partitions are sought back to their committed offsets (docs/FAUST_INTERNALS.md#seeks).
- **The leader topic is never fetched**: Faust's `<app id>-__assignor-__leader` partition carries
  no record (its assignment alone says which worker leads), but aiokafka fetches it like any
  other. aiokafka sends one fetch at a time to a broker, and only for partitions with nothing
  fetched left unconsumed: a busy worker's fetch could hold the leader partition alone, which
  the broker keeps for the whole fetch max wait while the events pile up behind it (the stall
  at 20,000 events/s: docs/FAUST_INTERNALS.md#fetches). It is paused in aiokafka at each
  assignment (Faust's own pause only stops Faust from asking for its records).
- **Metadata refreshed while a subscribed topic is unknown**: the group leader assigns only the
  partitions its metadata knows, and aiokafka rejoins when a metadata update shows more, by
  default 5 minutes later (`metadata_max_age_ms`). An assignment made while the broker was
  restarting gave nobody anything for 5 minutes 15 s in make chaos on Apache Kafka; each
  assignment now refreshes the metadata every second until every subscribed topic is known.
And one watch, always on: when the group coordinator last confirmed this worker's membership
(`membership`, streams.faust_compat.membership), attached when the consumer starts and told of
every assignment.

These override Faust 0.15 internals (`AIOKafkaConsumerThread._create_worker_consumer`,
`on_start`, `on_partitions_assigned`, `Consumer._drain_messages`, `App._leader_assignor`,
`Transport._get_controller_node`, which topic creation waits in for a broker);
pyproject pins faust-streaming below 0.16.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, cast

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT

from streams.faust_compat.aiokafka_calls import fetch_position
from streams.faust_compat.drain import RawFeed, drain_into_feed
from streams.faust_compat.membership import MembershipWatch

if TYPE_CHECKING:
    from faust.assignor.leader_assignor import LeaderAssignor

CONTROLLER_WAIT = 300.0     # seconds topic creation waits for the metadata to name a broker
METADATA_REFRESH_EVERY = 1.0    # seconds between refreshes while a subscribed topic is unknown
METADATA_REFRESH_FOR = 300.0    # ... for at most (then aiokafka's own periodic refresh)


def unknown_topics(cluster: Any, topics: set[str]) -> set[str]:
    """The topics of `topics` the metadata `cluster` knows no partition of."""
    return {t for t in topics if not cluster.partitions_for_topic(t)}


async def refresh_metadata_until(client: Any, done: Callable[[], bool], every: float,
                                 bound: float, stop: Callable[[], bool] = lambda: False) -> bool:
    """Refresh aiokafka's metadata every `every` s until `done()`; False when it is still not
    after `bound` s (or `stop()`)."""
    deadline = time.monotonic() + bound
    while not done():
        if stop() or time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every)
        try:
            await client.force_metadata_update()
        except Exception:       # the broker is away: the next round asks again
            pass
    return True


async def refresh_until_known(client: Any, topics: set[str],
                              every: float = METADATA_REFRESH_EVERY,
                              bound: float = METADATA_REFRESH_FOR) -> bool:
    """Refresh aiokafka's metadata until it knows every topic of `topics`; the group
    coordinator's metadata listener then rejoins. False: still unknown after `bound`."""
    return await refresh_metadata_until(
        client, lambda: not unknown_topics(client.cluster, topics), every, bound)


@dataclass
class ConsumerHooks:
    """What our consumer needs to know, held by the app's transport."""
    fetch_max_wait_ms: int | None = None     # None: Faust's own
    feed: RawFeed | None = None         # the topic fed raw to streams.io.event_feed
    # when the group coordinator last confirmed this worker (streams.pipeline.fencing)
    membership: MembershipWatch = field(default_factory=MembershipWatch)
    # changelog records restored a fetched run at a time (streams.faust_compat.changelog_restore)
    changelog_restored: int = 0
    # "read_committed" under exactly_once_v2: restores and standbys skip aborted transactions
    isolation_level: str | None = None      # None: Faust's own
    consumer: Any = None                    # the consumer thread's AIOKafkaConsumer, once started
    # exactly_once_v2: waits out transactions open on partitions about to be restored
    # (streams.io.transactions.OpenTransactions.settle)
    settle_transactions: Callable[[list[tuple[str, int]]], Awaitable[Any]] | None = None


def _leader_tp(app: AppT) -> TP:
    """The app's leader topic partition (Faust's app._leader_assignor._leader_tp; typed on
    faust.App and LeaderAssignor, not on AppT and LeaderAssignorT)."""
    return cast("LeaderAssignor", cast(faust.App, app)._leader_assignor)._leader_tp


class ProfilesConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    @property
    def hooks(self) -> ConsumerHooks:
        return cast("ProfilesTransport", self.consumer.transport).hooks    # set by install()

    async def on_start(self) -> None:
        await super().on_start()
        self.hooks.consumer = self._consumer
        self.hooks.membership.attach(self._consumer, self.thread_loop)

    _metadata_refresh: asyncio.Future | None = None

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        self.hooks.membership.joined()
        self._pause_leader_partition(assigned)
        self._refresh_metadata_while_topics_unknown()
        await super().on_partitions_assigned(assigned, generation_id)

    def _refresh_metadata_while_topics_unknown(self) -> None:
        """(The consumer thread: aiokafka's rebalance listener.)"""
        consumer = cast(AIOKafkaConsumer, self._consumer)      # started: it calls this
        client = consumer._client
        unknown = unknown_topics(client.cluster, set(consumer.subscription()))
        if unknown and (self._metadata_refresh is None or self._metadata_refresh.done()):
            self.log.warning("assigned while the metadata knows no partition of %s: refreshing "
                             "it every %.0f s until it does", sorted(unknown),
                             METADATA_REFRESH_EVERY)
            self._metadata_refresh = asyncio.ensure_future(refresh_until_known(client, unknown))

    def verify_event_path(self, now: float, tp) -> None:
        """Faust logs an error every few seconds for an assigned partition aiokafka has not
        fetched: the paused leader partition is never fetched, by design. And it reads the
        client's position, which a seek to the start leaves unset until the next fetch resets
        it (aiokafka resets lazily): the read raised, and the consumer crashed (make chaos)."""
        if not self.app.conf.topic_disable_leader and tp == _leader_tp(self.app):
            return None
        if not position_known(self._consumer, tp):
            return None
        return super().verify_event_path(now, tp)

    def _pause_leader_partition(self, assigned) -> None:
        """(The consumer thread: aiokafka's rebalance listener.) A new assignment gives every
        partition a fresh, unpaused fetch state."""
        if self.app.conf.topic_disable_leader:
            return
        leader = _leader_tp(self.app)
        if leader in assigned:
            cast(AIOKafkaConsumer, self._consumer).pause(    # started: it calls this
                TopicPartition(leader.topic, leader.partition))

    async def _highwaters(self, partitions):
        """Where table recovery reads to: under read_committed, once no transaction is open
        on the partitions (streams.io.transactions.OpenTransactions)."""
        settle = self.hooks.settle_transactions
        if settle is not None:
            still = await settle([(tp.topic, tp.partition) for tp in partitions])
            if still:
                self.log.warning("transactions still open after the wait, recovering to their "
                                 "start: %s", still)
        return await super()._highwaters(partitions)

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        wait_ms = self.hooks.fetch_max_wait_ms
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms
        if self.hooks.isolation_level is not None:
            # Faust reads committed data only with its own transactions (processing_guarantee
            # exactly_once); the fetcher takes the level from here when the consumer starts
            consumer._isolation_level = self.hooks.isolation_level
        return consumer


class ProfilesConsumer(faust_aiokafka.Consumer):
    # Seeks run in the consumer thread concurrently with fetches; a feed record whose fetch was
    # asked for before the latest seek ended is stale (docs/FAUST_INTERNALS.md#seeks). The epoch
    # is bumped when a seek starts and when it ends.
    _seek_epoch = 0
    _fetch_epoch = 0

    @property
    def hooks(self) -> ConsumerHooks:
        return cast("ProfilesTransport", self.transport).hooks    # set by install()

    def _new_consumer_thread(self):
        return ProfilesConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions, timeout):
        self._fetch_epoch = self._seek_epoch
        return await super()._getmany(active_partitions, timeout)

    def fetched_before_a_seek(self) -> bool:
        """Whether the records being drained were fetched before the latest seek (stale)."""
        return self._seek_epoch != self._fetch_epoch

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        forget_offsets(self, assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    async def perform_seek(self) -> None:
        self._seek_epoch += 1
        try:
            await super().perform_seek()
            await self._seek_feed_partitions_from_the_broker_answer()
        finally:
            self._seek_epoch += 1

    async def seek(self, partition, offset: int) -> None:
        self._seek_epoch += 1
        try:
            await super().seek(partition, offset)
        finally:
            self._seek_epoch += 1

    _committed_answer: dict = {}        # the broker's committed offsets at the latest seek

    async def seek_to_committed(self):
        answer = await super().seek_to_committed()
        self._committed_answer = {(tp.topic, tp.partition): offset
                                  for tp, offset in answer.items()}
        return answer

    async def _seek_feed_partitions_from_the_broker_answer(self) -> None:
        """After Faust's seek to the committed offsets, the feed's partitions are set from what
        the broker answered, never from the consumer's own bookkeeping (which can say a commit
        happened that failed: docs/FAUST_INTERNALS.md#offsets-after-a-revoke):
        - a partition without a commit is put at the start (the app's auto_offset_reset is
          "earliest"; Faust leaves it wherever the client is), so records dropped as stale are
          fetched again there too;
        - its committed offset is the broker's;
        - its read offset is the one before the next to read (the log's start: 0), so the drain
          loop's gap check covers the first record as well (streams.faust_compat.drain)."""
        feed = self.hooks.feed
        if feed is None:
            return
        fresh = []
        answer = self._committed_answer
        for tp in self.assignment():
            if tp.topic != feed.topic or (tp.topic, tp.partition) not in answer:
                continue            # (assigned after the answer: its own seek comes)
            committed = answer[(tp.topic, tp.partition)]
            if committed:
                self._committed_offset[tp] = committed
                self._read_offset[tp] = committed - 1
            else:
                self._committed_offset[tp] = None
                self._read_offset[tp] = -1
                fresh.append(TopicPartition(tp.topic, tp.partition))
        if fresh:
            await self._thread.seek_to_beginning(*fresh)

    async def offsets_kept(self, tp, offset: int) -> bool:
        """Whether `offset` of `tp` is still in the log (retention has not deleted it). When it
        cannot tell, True: reading again costs time, counting unread events as acked loses them."""
        try:
            earliest = (await self.earliest_offsets(tp)).get(tp)
        except Exception as exc:
            self.log.warning("%s: no earliest offset (%r); reading again", tp, exc)
            return True
        return earliest is None or offset >= earliest

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

    async def _get_controller_node(self, owner, client, timeout: int = 30000):
        """Faust's topic creation at start-up asks the metadata for a broker and raises at once
        when it names none, as a broker in its controlled shutdown answers: a worker started
        while the broker restarted exited with "Controller node not found" (a chaos run).
        Wait for a broker instead, as the start-up topic check does."""
        if not client.cluster.brokers():
            owner.log.warning("no broker in the cluster metadata; asking again every 1 s")
            await refresh_metadata_until(client, lambda: bool(client.cluster.brokers()), 1.0,
                                         CONTROLLER_WAIT, stop=lambda: owner.should_stop)
        return await super()._get_controller_node(owner, client, timeout)


def position_known(client: Any, tp) -> bool:
    """Whether aiokafka's client has a fetch position for `tp` (none while a reset is pending,
    or when `tp` is not assigned)."""
    return fetch_position(client, tp) is not None


def forget_offsets(consumer: faust_aiokafka.Consumer, assigned) -> None:
    """Drop the consumer's bookkeeping of `assigned` partitions: Faust clears it when partitions
    are revoked, but code of the revoke writes it again afterwards (the commit in its wait for
    in-flight messages records an offset as committed when the commit failed). Left over, the
    next assignment of the partition to this worker reads and commits from it
    (docs/FAUST_INTERNALS.md#offsets-after-a-revoke)."""
    for tp in assigned:
        for book in (consumer._read_offset, consumer._committed_offset, consumer._acked,
                     consumer._acked_index, consumer._gap):
            book.pop(tp, None)


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
