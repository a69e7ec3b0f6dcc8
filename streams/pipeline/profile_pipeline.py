"""The profile pipeline on a Faust app: one agent on `user-events`, one RocksDB table of user
states (changelog-backed), publishes to `profile-updates`, `profile-aggregates` and the DLQ.

Per micro-batch (`real_time_update.batch_size` events, taken raw from the consumer by
`streams.event_feed`): events are validated, grouped by user, and each user's state is read once
(decoded only on a cache miss), advanced by `features.update.apply_events`, written once, and
published at most once.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict

import faust
import orjson

from features.config import ProfileConfig
from features.encoding import decode, encode
from features.events import Rejection, day_of
from features.partitioners import PartitionCheck, describe
from features.profile import Profile
from features.runtime import FeatureRuntime
from features.schedule import NEVER, next_change_day
from features.state import UserState
from features.update import apply_events, day_end, mark_published
from streams import event_feed
from streams.faust_compat import table_recovery
from streams.counters import WorkerCounts
from streams.dead_letters import dead_letter
from streams.items import ItemFeed
from streams.pause_watch import PauseWatch
from streams.kafka_security import client_kwargs
from streams.publisher import Publisher
from streams.state_cache import StateCache
from streams.faust_compat import feed as faust_feed
from streams.faust_compat.producer import drain_changelog
from streams.faust_compat.tables import open_partition_db, partition_db, writing_to
from streams.state_table import PARTITION_KEY, PartitionClock, due_key, user_key
from streams.strategy import load_strategy

log = logging.getLogger(__name__)
STATE_TABLE = "user-state"


class _Deferred:
    """A RocksDB stand-in that queues puts and deletes into the batch's outbox."""

    def __init__(self, outbox: list, db):
        self.outbox, self.db = outbox, db

    def put(self, key: bytes, value: bytes) -> None:
        self.outbox.append(("local", lambda: self.db.put(key, value)))

    def delete(self, key: bytes) -> None:
        self.outbox.append(("local", lambda: self.db.delete(key)))


_REBALANCED = object()     # a batch taken before a rebalance: nothing emitted, not acked


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("delivering a batch failed; its events stay unacked and come again",
                  exc_info=task.exception())


class ProfilePipeline:
    def __init__(self, app: faust.App, cfg: ProfileConfig):
        self.app = app
        self.cfg = cfg
        self.rt = FeatureRuntime.from_config(cfg)
        self.tz = self.rt.engine.tz
        t = cfg.kafka.topics
        n = cfg.kafka.partitions
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.events_topic = app.topic(t.user_events, partitions=n, **raw)
        self.updates_topic = app.topic(t.profile_updates, partitions=n, **raw)
        self.aggregates_topic = app.topic(t.profile_aggregates, partitions=n, **raw)
        self.dlq_topic = app.topic(t.dlq, partitions=n, **raw)
        self.states = app.Table(STATE_TABLE, partitions=n, key_type=bytes, value_type=bytes,
                                options=cfg.performance.rocksdb.table_options())
        # a partition whose clock is past the end of its user-events partition is dropped and
        # rebuilt: its states would skip the events at offsets it says it applied
        table_recovery.check_source(app, self.states, t.user_events,
                                    lambda db: PartitionClock.unpack(db.get(PARTITION_KEY)).offset)
        kafka_kwargs = client_kwargs(cfg)
        self.items = ItemFeed(self.rt.catalog, cfg.kafka.bootstrap_servers, t.item_features,
                              kafka_kwargs)
        self.publisher = Publisher(cfg.kafka.bootstrap_servers, kafka_kwargs)
        self.on_publish = None      # (profile, trigger, ingest timestamp) -> None: monitoring
        self._published: list = []  # this batch's on_publish calls, made once delivered
        app.on_before_shutdown.connect(self._stop_publisher)
        self.strategy = load_strategy(cfg.real_time_update.strategy)
        self.counts = WorkerCounts()
        # events off the partition kafka.partitioner gives for their key (features.partitioners)
        self.partition_check = PartitionCheck(cfg.kafka.partitioner, n)
        # Scheduled jobs and the agent change the same states: one of them at a time.
        self.lock = asyncio.Lock()
        self.clocks: dict[int, PartitionClock] = {}    # cache of each PARTITION_KEY
        app.on_partitions_revoked.connect(self._forget_clocks)
        app.on_partitions_assigned.connect(self._forget_clocks)
        # recovery rewrites them (and may drop a partition: streams.faust_compat.table_recovery); anything
        # read meanwhile (the monitor's lag) is stale once it completes
        app.on_rebalance_complete.connect(self._forget_clocks)
        self.batch_size = cfg.real_time_update.batch_size
        # raw batches from the consumer (Faust's per-event stream path skipped: event_feed)
        self.feed = event_feed.install(
            app, t.user_events, capacity=max(cfg.real_time_update.queue_size, 2 * self.batch_size))
        self.cache = StateCache(cfg.performance.memory.max_cache_size)
        # Outputs of the batch being processed, emitted together at its end (see _process).
        self._outbox: list | None = None
        self.pause_watch = PauseWatch()
        # A pause this long means the broker has evicted this worker (heartbeats stopped).
        self.fence_seconds = float(app.conf.broker_session_timeout) + 2.0
        self._last_ok = time.monotonic()     # when the last batch was emitted ...
        self._ok_generation = None           # ... and in which consumer generation
        self._fenced_generation: int | None = None
        # PROFILES_FENCING=off shows what happens without it (docs/RELIABILITY.md)
        self.fencing = os.environ.get("PROFILES_FENCING", "on") != "off"
        if cfg.real_time_update.update_interval > 0:
            log.warning("real_time_update.update_interval=%s: holding back publishes is not "
                        "implemented yet; every change is published (docs/STREAMING.md)",
                        cfg.real_time_update.update_interval)
        app.agent(self.events_topic, name="profiles")(self._agent)
        app.task(self._load_items)

    async def _load_items(self) -> None:
        await self.items.run()

    async def _agent(self, stream) -> None:
        # The agent subscribes the topic; its messages arrive through self.feed, not `stream`.
        await self.items.ready.wait()   # events resolve categories against a complete catalog
        delivering: asyncio.Task | None = None
        while True:
            # what is there, at once: under load the next batch fills while this one runs
            batch = await self.feed.take(self.batch_size, within=0)
            faust_feed.track(self.app, batch)
            taken_in = self.app.rebalancing_count
            try:
                task = await self.process(batch, after=delivering, taken_in=taken_in)
            except BaseException:
                faust_feed.untrack(self.app, batch)     # see _deliver
                raise
            if delivering is not None:
                await delivering    # one batch delivering while the next computes; raises if
            delivering = task       # its delivery failed (the agent restarts, nothing acked)

    # ------------------------------------------------------------------ one micro-batch

    async def process(self, messages: list, after: asyncio.Task | None = None,
                      taken_in: int | None = None) -> asyncio.Task:
        """Compute the batch and hand its outputs to the producers; returns the task that
        delivers them (after the previous batch's delivery `after`) and then acks the batch.

        A batch taken before a rebalance began (`taken_in`: Faust's rebalance count then) emits
        nothing and is not acked: its partitions may belong to another worker by now, which
        reads the events again from the last commit, and a late state write of ours would
        land in that worker's changelog after its own."""
        async with self.lock:
            published = await self._process(messages, taken_in)
        ack = published is not _REBALANCED
        if not ack:
            published = None
            self.counts.rebalance_dropped_batches += 1
            self.cache.clear()
            faust_feed.untrack(self.app, messages)
        task = asyncio.create_task(self._deliver(messages, published, after, ack))
        task.add_done_callback(_log_failure)
        return task

    async def _deliver(self, messages: list, published: list | None,
                       after: asyncio.Task | None, ack: bool = True) -> None:
        try:
            if after is not None:
                await after             # acks stay in order; a failure there stops this one
            if published is not None:   # None: fenced, nothing was emitted
                await self._flush_writes()
        except BaseException:
            # Not acked, so never committed: the events come again after a restart. Untracked,
            # so a rebalance does not wait for them.
            faust_feed.untrack(self.app, messages)
            raise
        if published is not None:
            if self.on_publish is not None:
                for args in published:
                    self.on_publish(*args)
            self._last_ok, self._ok_generation = time.monotonic(), self.app.consumer_generation_id
        if ack:
            faust_feed.ack(self.app, messages)

    def _rebalanced(self, taken_in: int | None) -> bool:
        return taken_in is not None and (self.app.rebalancing
                                         or self.app.rebalancing_count != taken_in)

    async def _process(self, messages: list, taken_in: int | None = None):
        """Compute the batch and emit its outputs (not yet delivered); returns its on_publish
        calls, None when the batch was fenced, or _REBALANCED."""
        if self._rebalanced(taken_in):
            return _REBALANCED
        started = time.monotonic()
        # outputs, emitted at the end: ("send", topic, key, value) | ("state", message, key,
        # value) | ("local", fn)
        self._outbox = outbox = []
        self._published = []
        try:
            await self._compute(messages)
        except BaseException:
            self.cache.clear()              # cached states were advanced in place
            raise
        finally:
            self._outbox = None
        if self._rebalanced(taken_in):
            return _REBALANCED                  # process() empties the cache
        if self._fenced(started, len(messages)):
            self.cache.clear()
            return None
        for item in outbox:
            kind = item[0]
            if kind == "send":
                await self.publisher.send(item[1], item[2], item[3])
            elif kind == "state":
                with writing_to(item[1].partition, item[1].topic):
                    self.states[item[2]] = item[3]
            else:
                item[1]()
        return self._published

    def _fenced(self, started: float, n_events: int) -> bool:
        """Fencing, as far as the framework allows (no transactions on this broker): after the
        whole process was paused longer than the session timeout, the group has evicted this
        worker and given its partitions to others, which redo these events from the last
        commit. Until this worker rejoins (a new consumer generation), every batch is a
        zombie's: its outputs are dropped (its late commit is refused for the old generation).
        """
        if not self.fencing:
            return False
        generation = self.app.consumer_generation_id
        if self._fenced_generation is not None:
            if generation == self._fenced_generation:
                self.counts.fenced_batches += 1
                self.counts.fenced_events += n_events
                return True
            self._fenced_generation = None
            log.warning("rejoined the group (generation %s): processing again", generation)
        # A pause before the last rebalance is over: this batch belongs to the new assignment.
        since = min(self._last_ok, started) if generation == self._ok_generation else started
        pause = self.pause_watch.longest_pause_since(since)
        if pause <= self.fence_seconds:
            return False
        self._fenced_generation = generation
        self.counts.fenced_batches += 1
        self.counts.fenced_events += n_events
        log.warning("the process was paused %.1f s (session timeout %.0f s): this worker lost "
                    "its partitions; outputs dropped until it rejoins", pause,
                    self.fence_seconds - 2)
        return True

    async def _compute(self, messages: list) -> None:
        now = time.time()
        by_user: dict[int, list] = defaultdict(list)
        last: dict[int, tuple[int, int, object]] = {}   # partition -> (max ts, offset, message)
        parse = self.rt.parser.parse_message
        self.counts.events_in += len(messages)
        for msg in messages:
            ts, _, _ = last.get(msg.partition, (-1, 0, None))
            last[msg.partition] = (ts, msg.offset, msg)
            if msg.value is None:
                parsed = Rejection("malformed_json", "empty message (no value)")
            else:
                parsed = parse(msg.value, msg.key, now)
            if type(parsed) is Rejection:
                await self._dead_letter(parsed.reason, parsed.message, msg)
                continue
            by_user[parsed.user_id].append((msg.offset, parsed, msg))
            if parsed.ts > last[msg.partition][0]:
                last[msg.partition] = (parsed.ts, msg.offset, msg)
        for user_id, items in by_user.items():
            msg = items[0][2]
            self._check_partitions(msg.key, items)
            with writing_to(msg.partition, msg.topic):
                await self._advance_user(user_id, items)
        for partition, (ts, offset, msg) in last.items():
            clock = PartitionClock(max(ts, self.clock(partition).stream_time), offset)
            self._outbox.append(("state", msg, PARTITION_KEY, clock.pack()))
            self._outbox.append(("local", lambda p=partition, c=clock:
                                 self.clocks.__setitem__(p, c)))

    def _check_partitions(self, key: bytes, items: list) -> None:
        """Count the user's events that arrived off the partition kafka.partitioner gives for
        their key (one key: the validator refused any other), and those no known partitioner
        puts there; log what the keys fit once it is clear. A dict lookup per user."""
        check = self.partition_check
        expected = check.expected(key)
        off = [m.partition for _, _, m in items if m.partition != expected]
        if not off:
            return
        self.counts.partition_mismatch += len(off)
        for p in set(off):
            if not check.off(key, p):
                self.counts.partition_unexplained += off.count(p)
        verdict = check.new_verdict()
        if verdict is not None:
            log.warning("%s", describe(verdict, check.configured))

    def partitioning(self) -> dict:
        """/stats: the configured partitioner and the events it does not explain."""
        c = self.counts
        return {"partitioner": self.partition_check.configured,
                "mismatched_events": c.partition_mismatch,
                "unexplained_events": c.partition_unexplained,
                "keys_fit": self.partition_check.fits}

    def clock(self, partition: int) -> PartitionClock:
        """The partition's stream time and last offset processed, as stored with its states."""
        clock = self.clocks.get(partition)
        if clock is None:
            raw = partition_db(self.states, partition).get(PARTITION_KEY)
            clock = self.clocks[partition] = PartitionClock.unpack(raw)
        return clock

    async def _forget_clocks(self, *args, **kwargs) -> None:
        # after a rebalance another worker may have moved a partition on
        self.clocks.clear()

    async def _stop_publisher(self, *args, **kwargs) -> None:
        await self.publisher.stop()

    async def _flush_writes(self) -> None:
        """Deliver every state write and publish of this batch before its events are acked
        (both producers at once).

        Faust commits only acked offsets (the agent acks after this returns) and flushes the
        producer before committing, but its send_soon buffer (table changelog) flush gives up
        after 0.1 s without progress, so under load a commit could cover state writes still
        waiting there; a crash then loses them with no redelivery. Draining it here closes that.
        """
        await asyncio.gather(drain_changelog(self.app), self.publisher.flush())

    async def _flush_publishes(self) -> None:
        """Deliver the published records only (scheduled jobs: records before states)."""
        await self.publisher.flush()

    async def _advance_user(self, user_id: int, items: list) -> None:
        key = user_key(user_id)
        blob = self.states.get(key)
        if blob is None:
            state = UserState()
        else:
            state = self.cache.get(user_id, blob) or decode(blob, self.tz)
        by_offset = {off: msg for off, _, msg in items}
        up = apply_events(self.rt, user_id, state, [(off, e) for off, e, _ in items])
        c = self.counts
        c.applied += up.applied
        c.duplicates += up.duplicates
        c.redelivered += up.redelivered
        for off, ev in up.too_late:
            await self._dead_letter("too_late", f"day of timestamp {ev.ts} is before the user's "
                                    f"30-day window (user T {state.T})", by_offset[off])
        if up.profile is not None:
            if up.changed and self.strategy.should_update(user_id, [e for _, e, _ in items]):
                version = mark_published(state, up.profile)
                await self._publish(up.profile, version, "event", items[-1][2].timestamp)
            elif up.redelivered and not up.changed and state.version > 0:
                # A crash may have lost this record before the producer flushed: send it again
                # (same version, same arrays; the topic is compacted by user).
                await self._publish(up.profile, state.version, "event")
        for day, metrics in up.closed_days:
            await self._publish_aggregates(user_id, day, metrics)
        if up.profile is not None:
            due = next_change_day(state, day_of(state.T, self.tz), self.rt.engine.windows)
            db = partition_db(self.states, items[0][2].partition)
            self.set_due(_Deferred(self._outbox, db), user_id, state, due)
        if up.touched:
            blob = encode(state, self.tz)
            self._outbox.append(("state", items[0][2], key, blob))
            self.cache.put(user_id, blob, state)
        else:
            self.cache.discard(user_id)

    @staticmethod
    def set_due(db, user_id: int, state: UserState, day: int) -> None:
        """Move the user's entry in the partition's due index. The index is local to the
        RocksDB (no changelog): the state header carries the same day, and the index is rebuilt
        from the headers after a partition is (re)assigned (streams.jobs)."""
        if day == state.due_day:
            return
        if state.due_day >= 0:
            db.delete(due_key(state.due_day, user_id))
        if day != NEVER:
            db.put(due_key(day, user_id), b"")
        state.due_day = day

    async def _send(self, topic, key: bytes | None, value: bytes) -> None:
        """Hand an already-serialized record to the publisher (inside a batch: to its outbox);
        the batch's _flush_writes delivers it before the batch is acked."""
        if self._outbox is not None:
            self._outbox.append(("send", topic.get_topic_name(), key, value))
        else:
            await self.publisher.send(topic.get_topic_name(), key, value)

    async def _publish(self, profile: Profile, version: int, trigger: str,
                       ingest_ts: float | None = None) -> None:
        rec = profile.to_record(version, trigger, time.time())
        await self._send(self.updates_topic, user_key(profile.user_id), orjson.dumps(rec))
        self.counts.published[trigger] += 1
        if self.on_publish is not None:
            if self._outbox is not None:    # latency counts to delivery: called after the flush
                self._published.append((profile, trigger, ingest_ts))
            else:
                self.on_publish(profile, trigger, ingest_ts)

    async def _publish_aggregates(self, user_id: int, day: int, metrics: dict) -> None:
        rec = {"user_id": user_id, "day": day, "as_of": day_end(day, self.tz),
               "windows": {str(W): m for W, m in metrics.items()}}
        await self._send(self.aggregates_topic, str(user_id).encode(), orjson.dumps(rec))
        self.counts.aggregates += 1

    async def _dead_letter(self, reason: str, message: str, msg) -> None:
        value = dead_letter(reason, message, msg.value, msg.key, msg.topic, msg.partition,
                            msg.offset)
        await self._send(self.dlq_topic, msg.key, value)
        self.counts.dead_letters[reason] += 1

    # ------------------------------------------------------------------ reads

    def state_summary(self, user_id: int, partitions: list[int]) -> dict | None:
        """What the state holds, in numbers (events per day in the window, ids kept), read
        from the given (active) partitions only: standby copies may lag."""
        blob = self._read_state(user_id, partitions)
        if blob is None:
            return None
        st = decode(blob, self.tz)
        return {"T": st.T, "source_offset": st.source_offset, "version": st.version,
                "events": sum(b.total for b in st.days.values()),
                "days": {str(d): b.total for d, b in sorted(st.days.items())},
                "event_ids": len(st.event_ids)}

    def active_partitions(self) -> list[int]:
        """The partitions of user-events (and of the state table) this worker has active."""
        topic = self.cfg.kafka.topics.user_events
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == topic)

    def _read_state(self, user_id: int, partitions: list[int]) -> bytes | None:
        """The user's encoded state in the first of `partitions` that has it (open ones)."""
        key = user_key(user_id)
        for p in partitions:
            db = open_partition_db(self.states, p)
            blob = db.get(key) if db is not None else None
            if blob is not None:
                return blob
        return None

    def profile(self, user_id: int, partitions: list[int]) -> dict | None:
        """The user's current profile record from the given (active) partitions' state (None
        if not there: standby copies may lag)."""
        blob = self._read_state(user_id, partitions)
        if blob is None:
            return None
        state = decode(blob, self.tz, event_ids=False)
        if state.empty:
            return None
        # the latest published record's view: as of the last publish when a scheduled run
        # published after the user's last event
        p = self.rt.engine.evaluate(user_id, state, max(state.T, state.published_as_of))
        return p.to_record(state.version, "event", time.time())
