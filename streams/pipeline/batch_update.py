"""The compute step of a micro-batch: validate its events, group them by user, and advance each
user once (`features.update.apply_events`), staging every output in the batch's outbox.

Nothing here writes or sends: the table is only read (a user's state, a partition's clock),
and the lifecycle (streams.pipeline.lifecycle) decides whether the outbox is emitted.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any, Protocol

from features.encoding import decode, encode
from features.events import Event, Rejection, day_of
from features.partitioners import PartitionCheck, describe
from features.runtime import FeatureRuntime
from features.schedule import next_change_day
from features.state import UserState
from features.update import apply_events, mark_published
from streams.counters import EVENT_TRIGGER, WorkerCounts
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.outbox import Outbox, StateWrite
from streams.pipeline.publishing import Publishing
from streams.state_cache import StateCache
from streams.state_table import PartitionClock, move_due, user_key
from streams.strategy import UpdateStrategy

log = logging.getLogger(__name__)

# (source offset, event, message) of one user's events in a batch, in offset order
UserItems = list[tuple[int, Event, Any]]


class StateReader(Protocol):
    def get(self, partition: int, key: bytes) -> bytes | None: ...


class BatchUpdate:
    def __init__(self, rt: FeatureRuntime, states: StateReader, cache: StateCache,
                 clocks: PartitionClocks, publishing: Publishing, strategy: UpdateStrategy,
                 partition_check: PartitionCheck, counts: WorkerCounts):
        self.rt = rt
        self.tz = rt.engine.tz
        self.states = states
        self.cache = cache
        self.clocks = clocks
        self.publishing = publishing
        self.strategy = strategy
        self.partition_check = partition_check
        self.counts = counts

    def discard(self) -> None:
        """The batch's outputs are not emitted: the cached states it advanced in place go."""
        self.cache.clear()

    def compute(self, messages: list[Any], outbox: Outbox) -> None:
        now = time.time()
        by_user: dict[int, UserItems] = defaultdict(list)
        last: dict[int, tuple[int, int]] = {}   # partition -> (max event ts, last offset)
        parse = self.rt.parser.parse_message
        publishing = self.publishing
        self.counts.events_in += len(messages)
        for msg in messages:
            ts, _ = last.get(msg.partition, (-1, 0))
            last[msg.partition] = (ts, msg.offset)
            if msg.value is None:
                parsed = Rejection("malformed_json", "empty message (no value)")
            else:
                parsed = parse(msg.value, msg.key, now)
            if type(parsed) is Rejection:
                outbox.records.append(
                    publishing.dead_letter_record(parsed.reason, parsed.message, msg))
                continue
            by_user[parsed.user_id].append((msg.offset, parsed, msg))
            if parsed.ts > ts:
                last[msg.partition] = (parsed.ts, msg.offset)
        for user_id, items in by_user.items():
            self._check_partitions(items[0][2].key, items)
            self._advance_user(outbox, user_id, items)
        for partition, (ts, offset) in last.items():
            outbox.clocks[partition] = PartitionClock(
                max(ts, self.clocks.get(partition).stream_time), offset)

    def _check_partitions(self, key: bytes, items: UserItems) -> None:
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

    def _advance_user(self, outbox: Outbox, user_id: int, items: UserItems) -> None:
        """The user's state lives in the partition of their first event in the batch."""
        partition = items[0][2].partition
        key = user_key(user_id)
        blob = self.states.get(partition, key)
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
        publishing = self.publishing
        for off, ev in up.too_late:
            outbox.records.append(publishing.dead_letter_record(
                "too_late", f"day of timestamp {ev.ts} is before the user's 30-day window "
                f"(user T {state.T})", by_offset[off]))
        if up.profile is not None:
            if up.changed and self.strategy.should_update(user_id, [e for _, e, _ in items]):
                version = mark_published(state, up.profile)
                publishing.stage_profile(outbox, up.profile, version, EVENT_TRIGGER,
                                         items[-1][2].timestamp)
            elif up.redelivered and not up.changed and state.version > 0:
                # A crash may have lost this record before the producer flushed: send it again
                # (same version, same arrays; the topic is compacted by user).
                publishing.stage_profile(outbox, up.profile, state.version, EVENT_TRIGGER)
        for day, metrics in up.closed_days:
            outbox.records.append(publishing.aggregates_record(user_id, day, metrics))
        if up.profile is not None:
            due = next_change_day(state, day_of(state.T, self.tz), self.rt.engine.windows)
            move_due(outbox.local(partition), user_id, state, due)
        if up.touched:
            blob = encode(state, self.tz)
            outbox.state_writes.append(StateWrite(partition, key, blob))
            self.cache.put(user_id, blob, state)
        else:
            self.cache.discard(user_id)
