"""The work of the stream on the columnar core (features.columnar, docs/COLUMNAR.md).

`compute` (once per micro-batch): validate the events together (features.event_columns),
group them by user, and apply each
user's events to their state in place (`columnar.apply_events`); the user is then dirty in the
state cache. Dead letters are staged in the checkpoint's outbox at once.

`flush` (once per commit, streams.pipeline.lifecycle): every dirty user together — profiles
evaluated in one call (`columnar.finish`, which also gives the closed days' aggregates), the
changed ones published (or held back: `real_time_update.update_interval`, features.holdback),
the next change days in one call, the due index moved, each state encoded (v3) and staged as
one state write — so a user costs one evaluation, one encode and one table and changelog write
per commit however many batches touched them.

With a hold-back, each flush first takes the held users whose interval has passed (highest
`calculate_priority` first) into the commit, dirty without events: it publishes their latest
profile. The timer of streams.pipeline.holdback commits for them when the agent has nothing
open (an idle stream).

Nothing here writes or sends: the table is only read (a user's state, a partition's clock),
and the lifecycle decides whether the outbox is emitted.
"""
from __future__ import annotations

import logging
import time
from typing import Protocol, cast

from features import columnar
from features.event_columns import parse_batch
from features.events import Event
from features.holdback import Held, HeldUsers, HoldBack
from features.partitioners import PartitionCheck, describe
from features.publish_rules import (
    AfterEvaluation,
    after_evaluation,
    hold_declined,
    hold_unevaluated,
    maybe_lost_record,
)
from features.runtime import FeatureRuntime
from features.update import mark_published
from streams.io.raw_batch import RawBatch
from streams.monitoring.counters import EVENT_TRIGGER, WorkerCounts
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.outbox import Outbox, StateWrite
from streams.pipeline.publishing import Publishing
from streams.state.cache import DirtyUser, StateCache
from streams.state.table_keys import NO_HANDOVER, PartitionClock, move_due, user_key
from streams.strategy import PublishEveryChange, UpdateStrategy

log = logging.getLogger(__name__)

# (source offset, event, index in the batch) of one user's events in a batch, in offset order
UserItems = list[tuple[int, Event, int]]


class StateReader(Protocol):
    def get(self, partition: int, key: bytes) -> bytes | None: ...


class BatchUpdate:
    def __init__(self, rt: FeatureRuntime, states: StateReader, cache: StateCache,
                 clocks: PartitionClocks, publishing: Publishing, strategy: UpdateStrategy,
                 partition_check: PartitionCheck, counts: WorkerCounts,
                 hold: HoldBack = HoldBack(), held: HeldUsers | None = None,
                 held_batch: int = 20000):
        self.rt = rt
        self.tz = rt.engine.tz
        self.states = states
        self.cache = cache
        self.clocks = clocks
        self.publishing = publishing
        self.strategy = strategy
        self.partition_check = partition_check
        self.counts = counts
        self.time_windows = tuple(rt.cfg.behavior_preferences.time_windows)
        self.hold = hold
        self.held = held if held is not None else HeldUsers()
        self.held_batch = held_batch        # most held users sent by one commit
        self._priority_failed = False
        # the default strategy reads no events: none are kept for it (unless publishes are held
        # back: its calculate_priority orders the held users going out)
        self.keep_events = type(strategy) is not PublishEveryChange or hold.enabled
        # (partition, user) whose published record this worker has sent again since it got the
        # partition (local only): once delivered, sending it at each later commit that reads
        # more of the user's redelivered events only repeats it
        self.sent_again: set[tuple[int, int]] = set()

    @property
    def dirty_count(self) -> int:
        return self.cache.dirty_count

    def discard(self) -> None:
        """The open checkpoint's outputs are not emitted: every cached state goes (the dirty
        ones and any advanced in place), and so do the records sent again."""
        self.cache.clear()
        self.sent_again.clear()

    def forget_sent_again(self) -> None:
        """A rebalance: a partition may come back with states another worker wrote."""
        self.sent_again.clear()

    # ------------------------------------------------------------------ per batch

    def compute(self, batch: RawBatch, outbox: Outbox) -> None:
        now = time.time()
        by_user: dict[int, UserItems] = {}
        max_ts: dict[int, int] = {}     # partition -> largest event timestamp in the batch
        self.counts.events_in += len(batch)
        offsets, partitions = batch.offsets, batch.partitions
        parsed_batch = parse_batch(self.rt.parser, batch.values, batch.keys, now)
        for i, rejection in parsed_batch.rejected:
            outbox.records.append(self.publishing.dead_letter_record(
                rejection.reason, rejection.message, batch.record(i)))
        handover = self._handovers(outbox, {r.tp.partition for r in batch.runs})
        for i, parsed in parsed_batch.events:
            if handover and parsed.ts <= handover.get(partitions[i], NO_HANDOVER):
                self.counts.handed_over += 1        # in the bootstrapped state already
                continue
            items = by_user.get(parsed.user_id)
            if items is None:
                by_user[parsed.user_id] = [(offsets[i], parsed, i)]
            else:
                items.append((offsets[i], parsed, i))
            p = partitions[i]
            if parsed.ts > max_ts.get(p, -1):
                max_ts[p] = parsed.ts
        for user_id, items in by_user.items():
            self._check_partitions(batch, items)
            self._advance_user(outbox, batch, user_id, items)
        last_offset = dict(zip(partitions, offsets))    # (in offset order: the last wins)
        clocks = outbox.clocks
        for partition, offset in last_offset.items():
            # the checkpoint's clock so far, else the stored one
            before = clocks.get(partition) or self.clocks.get(partition)
            clocks[partition] = PartitionClock(
                max(max_ts.get(partition, -1), before.stream_time), offset, before.handover_ts)

    def _handovers(self, outbox: Outbox, partitions: set[int]) -> dict[int, int]:
        """{partition: handover_ts} of the batch's partitions a bootstrap handed over at a
        time (empty for the others: one clock lookup per partition in the batch)."""
        out = {}
        for p in partitions:
            clock = outbox.clocks.get(p) or self.clocks.get(p)
            if clock.handover_ts != NO_HANDOVER:
                out[p] = clock.handover_ts
        return out

    def _check_partitions(self, batch: RawBatch, items: UserItems) -> None:
        """Count the user's events that arrived off the partition kafka.partitioner gives for
        their key (one key: the validator refused any other), and those no known partitioner
        puts there; log what the keys fit once it is clear. A dict lookup per user."""
        check = self.partition_check
        key = cast(bytes, batch.keys[items[0][2]])      # (a valid event has a bytes key)
        expected = check.expected(key)
        partitions = batch.partitions
        off = [p for _, _, i in items if (p := partitions[i]) != expected]
        if not off:
            return
        self.counts.partition_mismatch += len(off)
        for p in set(off):
            if not check.off(key, p):
                self.counts.partition_unexplained += off.count(p)
        verdict = check.new_verdict()
        if verdict is not None:
            log.warning("%s", describe(verdict, check.configured))

    def _advance_user(self, outbox: Outbox, batch: RawBatch, user_id: int,
                      items: UserItems) -> None:
        """The user's state lives in the partition of their first event in the batch."""
        first = items[0][2]
        partition = batch.partitions[first]
        cache = self.cache
        dirty = cache.dirty(partition, user_id)
        if dirty is not None:
            state = dirty.state
        else:
            key = user_key(user_id)
            blob = self.states.get(partition, key)
            if blob is None:
                state = columnar.ColumnarState.new()
            else:
                state = cache.get(user_id, blob) or columnar.decode(blob, self.tz)
            dirty = DirtyUser(user_id, partition, key, state,
                              columnar.ColumnarUpdate(user_id, state),
                              ingest_ts=batch.timestamps[first])
            cache.mark_dirty(dirty)
            if maybe_lost_record(blob is not None, state.version, items[0][0],
                                 state.source_offset, (partition, user_id) in self.sent_again):
                self._send_published_again(outbox, dirty)
        up = columnar.apply_events(self.rt, user_id, state, [(off, e) for off, e, _ in items])
        c = self.counts
        c.applied += up.applied
        c.duplicates += up.duplicates
        c.redelivered += up.redelivered
        acc = dirty.update
        acc.applied += up.applied
        acc.duplicates += up.duplicates
        acc.redelivered += up.redelivered
        acc.closing.extend(up.closing)
        if self.keep_events:
            dirty.events.extend(e for _, e, _ in items)
        if up.too_late:
            by_offset = {off: i for off, _, i in items}
            publishing = self.publishing
            for off, ev in up.too_late:
                outbox.records.append(publishing.dead_letter_record(
                    "too_late", f"day of timestamp {ev.ts} is before the user's 30-day window "
                    f"(user T {state.T})", batch.record(by_offset[off])))

    def _send_published_again(self, outbox: Outbox, d: DirtyUser) -> None:
        """A user's events come again (after a crash, or a rebalance that was not clean): the
        state already holds them. States reach the changelog before records go out, so a crash
        between the two can have lost the record of the state's version: send it again, first
        (same version, same arrays, as of the state's T; the topic is compacted by user), and
        whatever newer events change follows it as the next version, so versions grow by one
        (FEATURES.md §7). When the record was delivered, this is the same record twice. The
        hold-back counts from it. Skipped when the state does not give the published arrays
        back (nothing to send that would be the same). Tried once per user until a rebalance or
        a dropped checkpoint."""
        self.sent_again.add((d.partition, d.user_id))
        state = d.state
        profile = columnar.evaluate_many(self.rt.engine, [d.user_id], [state.copy()],
                                         with_metrics=False)[0]
        if profile.digest() != state.published_digest:
            return
        now_ms = int(time.time() * 1000)
        state.published_at = now_ms
        self.counts.sent_again += 1
        self.publishing.stage_profile(outbox, profile, state.version, EVENT_TRIGGER,
                                      at=now_ms / 1000)

    # ------------------------------------------------------------------ per commit

    def flush(self, outbox: Outbox) -> None:
        """Stage every dirty user's outputs and state write in `outbox`; they become clean."""
        now_ms = int(time.time() * 1000)
        if self.hold.enabled and self.held:
            self.stage_held(self.held.take_due(now_ms, self.held_batch, self._priority))
        dirty = self.cache.flushed()
        if not dirty:
            return
        self.counts.state_writes += len(dirty)
        engine = self.rt.engine
        strategy = self.strategy
        # within the interval of their last publish: held without an evaluation (the timer
        # evaluates them when it is due)
        held_now = self._hold_unevaluated(dirty, now_ms) if self.hold.enabled else []
        updates = [d.update for d in dirty]
        columnar.finish(engine, updates, self.time_windows, with_metrics=False)
        publishing = self.publishing
        hold, held, counts = self.hold, self.held, self.counts
        evaluated: list[DirtyUser] = list(held_now)     # (whose due day is moved below)
        for d in dirty:
            up, state = d.update, d.state
            if up.profile is not None:
                evaluated.append(d)
                fate = after_evaluation(
                    up.changed, state.held, up.held,
                    lambda: strategy.should_update(d.user_id, d.events),   # (asked at once)
                    hold.publish_now(state.published_at, now_ms))
                if fate is AfterEvaluation.PUBLISH:
                    version = mark_published(state, up.profile)
                    state.published_at = now_ms
                    if state.held:
                        state.held = False
                        held.release(d.partition, d.user_id)
                        if up.held:
                            counts.held_flushed += 1
                    # updated_at is the publish time the hold-back counts from
                    publishing.stage_profile(outbox, up.profile, version, EVENT_TRIGGER,
                                             d.ingest_ts, now_ms / 1000)
                elif fate is AfterEvaluation.HOLD:      # (held, or a clock that went back)
                    self._hold(d, now_ms)
                elif fate is AfterEvaluation.UNHOLD:
                    state.held = False
            for day, metrics in up.closed_days:
                outbox.records.append(publishing.aggregates_record(d.user_id, day, metrics))
        if evaluated:
            tz = self.tz
            states = [d.state for d in evaluated]
            dues = columnar.next_change_days(states, [(s.T + tz) // 86400 for s in states],
                                             engine.windows, tz)
            for d, due in zip(evaluated, dues):
                move_due(outbox.local(d.partition), d.user_id, d.state, due)
        cache = self.cache
        for d in dirty:
            state = d.state
            blob = columnar.encode(state)
            state.buf = blob        # views over the record until the next change: one copy
            outbox.state_writes.append(StateWrite(d.partition, d.key, blob))
            cache.put(d.user_id, blob, state)

    # ------------------------------------------------------------------ held publishes

    def _hold_unevaluated(self, dirty: list[DirtyUser], now_ms: int) -> list[DirtyUser]:
        """Hold the users whose events came within the interval of their last publish, before
        any evaluation: whether their arrays changed is learnt when the timer sends them (no
        record then if they did not). should_update is asked for these events as for a change;
        False holds nothing (a user held already stays held). Redelivered events are evaluated
        as ever (the record a crash may have lost is sent again)."""
        hold, strategy = self.hold, self.strategy
        out = []
        for d in dirty:
            up, state = d.update, d.state
            if not hold_unevaluated(up.held, up.redelivered > 0, up.wants_profile,
                                    hold.publish_now(state.published_at, now_ms)):
                continue
            up.evaluate = False
            out.append(d)
            if hold_declined(state.held, lambda: strategy.should_update(d.user_id, d.events)):
                self._hold(d, now_ms)
        return out

    def _hold(self, d: DirtyUser, now_ms: int) -> None:
        d.state.held = True
        self.held.hold(d.partition, d.user_id, self.hold.due_ms(d.state.published_at), now_ms,
                       d.events)
        self.counts.held += 1

    def _priority(self, h: Held) -> float:
        try:
            return float(self.strategy.calculate_priority(h.user_id, h.events))
        except Exception:
            if not self._priority_failed:
                self._priority_failed = True
                log.exception("update strategy: calculate_priority failed; held users go out "
                              "in due order")
            return 0.0

    def stage_held(self, due: list[Held]) -> None:
        """Make the held users of `due` dirty (in this order, after those dirty already) for
        the flush, which publishes each one's latest profile. Users no longer held are
        skipped."""
        cache = self.cache
        for h in due:
            d = cache.dirty(h.partition, h.user_id)
            if d is not None:               # events of its own in this commit
                d.update.held = d.state.held
                continue
            key = user_key(h.user_id)
            blob = self.states.get(h.partition, key)
            if blob is None:
                continue
            state = cache.get(h.user_id, blob) or columnar.decode(blob, self.tz)
            if not state.held:
                continue
            up = columnar.ColumnarUpdate(h.user_id, state, held=True)
            cache.mark_dirty(DirtyUser(h.user_id, h.partition, key, state, up,
                                       events=list(h.events)))
