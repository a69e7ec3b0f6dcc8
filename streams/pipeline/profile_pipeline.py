"""The profile pipeline on a Faust app: one agent on `user-events`, one RocksDB table of user
states (changelog-backed), publishes to `profile-updates`, `profile-aggregates` and the DLQ.

Per micro-batch (`real_time_update.batch_size` events, taken raw from the consumer by
`streams.io.event_feed`): events are validated, grouped by user, and each user's state (read from
the state cache, decoded from the table on a miss) is advanced in place by the columnar core
(features.columnar). Per commit (write-back: when the worker has caught up, or on
`real_time_update.commit_interval` / `max_dirty_users`, or before a rebalance or a scheduled
run): every user the commit's batches touched is evaluated together, written once and
published at most once. The parts, each in its own module of this package:

- topology: the topics and the state table declared on the app;
- lifecycle: take, track, compute, commit (fence, drop on rebalance, emit), deliver, ack;
- batch_update: the compute step (validation, applying events) and the flush (evaluation,
  records, state writes) into an outbox;
- outbox: the typed outputs of a batch (records, state writes, local-only writes);
- publishing: profile records, aggregates and dead letters, and who is told of a publish;
- outputs: the outbox to the producers and the table, and its delivery;
- fencing, clocks: a zombie worker's batches dropped; each partition's clock;
- holdback: held publishes going out when `real_time_update.update_interval` has passed;
- reads: the state as the query API reads it.

This class wires them and is what the scheduled runs, monitoring and the HTTP routes use.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import faust

from features.config import ProfileConfig
from features.holdback import HeldUsers, HoldBack
from features.partitioners import PartitionCheck
from features.profile import Profile
from features.runtime import FeatureRuntime
from streams.faust_compat.consumer import consumer_hooks
from streams.faust_compat.group import FaustGroup
from streams.io import event_feed
from streams.io.items import ItemFeed
from streams.io.kafka_security import client_kwargs, librdkafka_settings
from streams.io.producer_settings import librdkafka_producer_settings
from streams.io.publisher import open_publisher, output_settings
from streams.io.transactions import OpenTransactions, TransactionalProducer
from streams.monitoring.counters import WorkerCounts
from streams.pipeline.batch_update import BatchUpdate
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.fencing import Fence
from streams.pipeline.holdback import HeldPublishes
from streams.pipeline.lifecycle import BatchLifecycle, CommitPolicy
from streams.pipeline.outputs import ProducerOutputs, TransactionalOutputs
from streams.pipeline.publishing import Publishing, PublishObserver
from streams.pipeline.reads import ProfileReads
from streams.pipeline.topology import declare
from streams.process.gc_policy import freeze_start_up_heap
from streams.process.pause_watch import PauseWatch
from streams.state.cache import StateCache
from streams.state.owned_chunks import OwnedChunks
from streams.state.table_keys import PartitionClock
from streams.strategy import load_strategy
from streams.web.restart import restart_in_place

log = logging.getLogger(__name__)


# how long after its timeout the broker may take to abort a transaction (its
# transaction.abort.timed.out.transaction.cleanup.interval.ms: 10 s by default, 2 s embedded)
TRANSACTION_ABORT_DELAY = 10.0


def transactional_id(cfg: ProfileConfig, instance_id: int) -> str:
    """A worker's transactional id: its instance's, so a restarted worker fences the process
    it replaces and aborts what that one left open (instance ids are unique per app, as
    their data dirs and ports are)."""
    return f"{cfg.worker.app_id}-{instance_id}"


def open_transactional_producer(cfg: ProfileConfig, instance_id: int) -> TransactionalProducer:
    settings = output_settings(cfg.kafka.bootstrap_servers, librdkafka_producer_settings(cfg))
    settings["transaction.timeout.ms"] = int(cfg.kafka.client.transaction_timeout_seconds * 1000)
    return TransactionalProducer(settings, transactional_id(cfg, instance_id))


class ProfilePipeline:
    def __init__(self, app: faust.App, cfg: ProfileConfig, instance_id: int = 1):
        self.app = app
        self.cfg = cfg
        self.rt = FeatureRuntime.from_config(cfg)
        self.tz = self.rt.engine.tz
        t, rtu = cfg.kafka.topics, cfg.real_time_update
        self.group = FaustGroup(app, t.user_events)
        # exactly_once_v2: one producer, in transactions, for the changelog and the outputs;
        # restores, standbys and the consumer read committed records only
        self.transactions: TransactionalProducer | None = None
        if cfg.kafka.exactly_once:
            self.transactions = open_transactional_producer(cfg, instance_id)
            hooks = consumer_hooks(app)
            hooks.isolation_level = "read_committed"
            hooks.settle_transactions = OpenTransactions(
                {"bootstrap.servers": cfg.kafka.bootstrap_servers, **librdkafka_settings(cfg)},
                cfg.kafka.client.transaction_timeout_seconds + TRANSACTION_ABORT_DELAY).settle
        self.topology = declare(app, cfg, self.transactions)
        self.states = self.topology.states
        self.counts = WorkerCounts()
        kafka_kwargs = client_kwargs(cfg)
        self.items = ItemFeed(self.rt.catalog, cfg.kafka.bootstrap_servers, t.item_features,
                              kafka_kwargs)
        self.publisher = open_publisher(cfg, self.transactions)
        # alerts go out on their own, never inside a commit's transaction
        self.alerts_publisher = self.publisher if self.transactions is None \
            else open_publisher(cfg)
        app.on_before_shutdown.connect(self._shutdown)
        self.publishing = Publishing(t, self.publisher, self.counts, self.tz)
        # events off the partition kafka.partitioner gives for their key (features.partitioners)
        self.partition_check = PartitionCheck(cfg.kafka.partitioner, cfg.kafka.partitions)
        self.clocks = PartitionClocks(self.states)
        # forgotten on every rebalance: recovery rewrites them (and may drop a partition);
        # anything read meanwhile (the monitor's lag) is stale once it completes
        for signal in (app.on_partitions_revoked, app.on_partitions_assigned,
                       app.on_rebalance_complete):
            signal.connect(self._forget_clocks)
        self.batch_size = rtu.batch_size
        # raw batches from the consumer (Faust's per-event stream path skipped: event_feed)
        self.feed = event_feed.install(app, t.user_events,
                                       capacity=max(rtu.queue_size, 2 * self.batch_size))
        self.cache = StateCache(cfg.performance.memory.max_cache_size)
        self.outputs = ProducerOutputs(app, self.publisher, self.states, self.clocks) \
            if self.transactions is None else \
            TransactionalOutputs(app, self.publisher, self.states, self.clocks,
                                 self.transactions, self.group)
        strategy = load_strategy(rtu.strategy)
        hold = HoldBack(rtu.update_interval)
        self.held = HeldUsers()
        self.update = BatchUpdate(self.rt, self.states, self.cache, self.clocks,
                                  self.publishing, strategy, self.partition_check, self.counts,
                                  hold, self.held, rtu.max_dirty_users)
        # PROFILES_FENCING=off shows what happens without it (docs/RELIABILITY.md)
        fence = Fence(PauseWatch(), float(app.conf.broker_session_timeout), self.counts,
                      enabled=os.environ.get("PROFILES_FENCING", "on") != "off",
                      membership=consumer_hooks(app).membership)
        self.lifecycle = BatchLifecycle(
            self.group, self.update, self.outputs, fence, self.counts, self.publishing.delivered,
            CommitPolicy(rtu.commit_interval, rtu.max_dirty_users), self._delivery_failed,
            others_wait_delivery=self.transactions is not None)
        # Scheduled jobs and the agent change the same states: one of them at a time. Taken by
        # anyone but the agent, it commits the agent's open checkpoint first.
        self.lock = self.lifecycle.others_lock
        # Readers that write nothing (the quality scan) need no commit: the table holds the
        # states of the last one, never half a commit.
        self.read_lock = self.lifecycle.lock
        self.reads = ProfileReads(self.rt, self.states)
        # update_interval > 0: held publishes go out on a timer (streams.pipeline.holdback)
        self.held_publishes: HeldPublishes | None = None
        if hold.enabled:
            self.held_publishes = HeldPublishes(
                hold, self.held, self.lifecycle, self.group,
                OwnedChunks(self.group, self.states, self.read_lock))
            app.task(self._send_held)
            app.on_partitions_revoked.connect(self._held_delivered)
        app.agent(self.topology.events, name="profiles")(self._agent)
        app.task(self._load_items)

    _restarting = False
    _closing = False

    def _delivery_failed(self, exc: BaseException) -> None:
        """A checkpoint's states or records were not delivered (the broker away for longer than
        `kafka.client.delivery_timeout_seconds`, or a record refused). Nothing of it was acked,
        and every checkpoint after it is dropped: the worker restarts in place, so it reads its
        events again from the last commit on the states its table and changelog hold, as after
        a crash."""
        if self._restarting or self._closing or self.app.should_stop:
            return          # (a delivery at shutdown: its events come again after the start)
        self._restarting = True
        restart_in_place(f"delivering a checkpoint failed ({exc}); its events come again")

    async def _load_items(self) -> None:
        await self.items.run()

    async def _agent(self, stream: Any) -> None:
        # The agent subscribes the topic; its messages arrive through self.feed, not `stream`.
        await self.items.ready.wait()   # events resolve categories against a complete catalog
        if self.transactions is not None:
            await self.transactions.start()     # fences this instance's previous process
        freeze_start_up_heap(self.cfg.performance.gc)
        await self.lifecycle.run(self.feed, self.batch_size)

    async def _send_held(self) -> None:
        assert self.held_publishes is not None
        await self.held_publishes.run(lambda: self.app.should_stop)

    async def _held_delivered(self, *args: Any, **kwargs: Any) -> None:
        assert self.held_publishes is not None
        await self.held_publishes.on_revoked()

    async def _forget_clocks(self, *args: Any, **kwargs: Any) -> None:
        self.clocks.forget()
        self.update.forget_sent_again()
        if self.held_publishes is not None:
            self.held_publishes.forget()

    async def _shutdown(self, *args: Any, **kwargs: Any) -> None:
        self._closing = True
        try:
            await self.lifecycle.close()    # the consumer has waited for it: usually a no-op
        except Exception:
            log.exception("committing the open checkpoint at shutdown failed; its events come "
                          "again after the restart")
        if self.transactions is not None:
            try:
                await self.transactions.abort()     # a scheduled run's, cut short
            except Exception:                       # (fenced: nothing of it counts either)
                log.warning("aborting the open transaction at shutdown failed", exc_info=True)
        try:
            await self.publisher.stop()
            if self.alerts_publisher is not self.publisher:
                await self.alerts_publisher.stop()
        finally:
            if self.states.changelog is not None:
                await self.states.changelog.stop()

    # ------------------------------------------------------------------ for the scheduled runs

    def clock(self, partition: int) -> PartitionClock:
        """The partition's stream time and last offset processed, as stored with its states."""
        return self.clocks.get(partition)

    async def publish(self, profile: Profile, version: int, trigger: str) -> None:
        """Hand a profile record to the output producer now (delivered by flush_publishes)."""
        await self.publishing.publish(profile, version, trigger)

    async def publish_aggregates(self, user_id: int, day: int, metrics: dict[int, Any]) -> None:
        """Hand a closed day's profile-aggregates record to the output producer now (delivered
        by flush_publishes)."""
        await self.publishing.send(self.publishing.aggregates_record(user_id, day, metrics))

    async def flush_publishes(self) -> None:
        """Deliver the published records only (records before the states that say so)."""
        await self.outputs.deliver_records()

    async def flush_writes(self) -> None:
        """Deliver every state write and record so far."""
        await self.outputs.deliver_all()

    # ------------------------------------------------------------------ for monitoring and reads

    @property
    def on_publish(self) -> PublishObserver | None:
        return self.publishing.on_publish

    @on_publish.setter
    def on_publish(self, observer: PublishObserver | None) -> None:
        self.publishing.on_publish = observer

    def held_figures(self) -> dict[str, float]:
        """/metrics and /stats: users held now and the age of the one waiting longest."""
        hp = self.held_publishes
        return {"held_users": len(self.held),
                "held_oldest_age_seconds": hp.oldest_age() if hp is not None else 0.0}

    def active_partitions(self) -> list[int]:
        """The partitions of user-events (and of the state table) this worker has active."""
        return self.group.owned()

    def partitioning(self) -> dict[str, Any]:
        """/stats: the configured partitioner and the events it does not explain."""
        c = self.counts
        return {"partitioner": self.partition_check.configured,
                "mismatched_events": c.partition_mismatch,
                "unexplained_events": c.partition_unexplained,
                "keys_fit": self.partition_check.fits}

    def profile(self, user_id: int, partitions: list[int]) -> dict[str, Any] | None:
        return self.reads.profile(user_id, partitions)

    def profiles(self, user_ids: list[int], partitions: list[int]
                 ) -> dict[int, dict[str, Any] | None]:
        return self.reads.profiles(user_ids, partitions)

    def state_summary(self, user_id: int, partitions: list[int]) -> dict[str, Any] | None:
        return self.reads.state_summary(user_id, partitions)
