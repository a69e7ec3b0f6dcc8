"""Per-user rolling state: integer aggregates per event-time day for the last 30 days.

Only integers are kept (counts, dwell in milliseconds, second timestamps), so the order events
arrive in cannot change a sum; `features.profile.evaluate` turns them into floats in one fixed
order. Days, items and event ids that leave the 30-day window as of T are dropped.
"""
from __future__ import annotations

import hashlib
from bisect import bisect_left
from dataclasses import dataclass, field

from features.events import Event, day_of

STATE_DAYS = 30          # the longest window any feature may use (FEATURES.md §8)
EVENT_ID_HASH_BYTES = 6  # 48-bit hash: collision odds ~n²/2^49 per user (n ids in 30 days)

APPLIED, TOO_LATE, DUPLICATE = "applied", "too_late", "duplicate"
UNKNOWN_DUE = -2
NO_CLOSED_DAY = -1      # no closed day recorded: day(T)'s aggregates count as not published


@dataclass(slots=True)
class DayBucket:
    actions: dict[int, int] = field(default_factory=dict)            # action -> events
    dwell_ms: int = 0                                                # sum over events with dwell
    dwell_n: int = 0
    # (category k, action) -> events
    cats: dict[tuple[int, int], int] = field(default_factory=dict)
    # Sorted [first_t, last_t] runs whose consecutive gaps are <= the session gap: the day's
    # timestamps reduced to what sessions need (sessions across days merge runs at read time).
    runs: list[list[int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.actions.values())


@dataclass(slots=True)
class UserState:
    T: int = -1                       # largest applied event timestamp; -1 before any event
    days: dict[int, DayBucket] = field(default_factory=dict)
    items: dict[int, int] = field(default_factory=dict)       # item_id -> last day seen
    event_ids: dict[int, int] = field(default_factory=dict)   # event_id hash -> day applied
    # Stream bookkeeping carried with the state so recovery is exact (see streams/).
    source_offset: int = -1
    version: int = 0
    published_digest: int = 0
    # The day the published profile can next change with no new event (features.schedule),
    # mirrored by the due index the hourly job reads; UNKNOWN_DUE until first computed.
    due_day: int = UNKNOWN_DUE
    published_as_of: int = -1        # as_of of the last published record
    # The last day whose profile-aggregates record was published (by the event that closed it,
    # or by a scheduled run once stream time passed it); only day(T) can still be open.
    closed_day: int = NO_CLOSED_DAY

    @property
    def empty(self) -> bool:
        return self.T < 0


def event_id_hash(event_id: str) -> int:
    digest = hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"),
                             digest_size=EVENT_ID_HASH_BYTES).digest()
    return int.from_bytes(digest, "little")


def add_timestamp(runs: list[list[int]], t: int, gap: int) -> None:
    """Insert t into the day's runs, merging neighbours whose gap becomes <= gap."""
    i = bisect_left(runs, [t, t])
    # runs[i-1] starts at or before t; runs[i] starts after t
    if i > 0 and runs[i - 1][1] >= t:
        return                              # inside an existing run
    joins_prev = i > 0 and t - runs[i - 1][1] <= gap
    joins_next = i < len(runs) and runs[i][0] - t <= gap
    if joins_prev and joins_next:
        runs[i - 1][1] = runs[i][1]
        del runs[i]
    elif joins_prev:
        runs[i - 1][1] = t
    elif joins_next:
        runs[i][0] = t
    else:
        runs.insert(i, [t, t])


class StateRules:
    """The config facts apply() needs, compiled once."""

    __slots__ = ("tz", "gap")

    def __init__(self, tz_offset_seconds: int, session_gap_seconds: int):
        self.tz = tz_offset_seconds
        self.gap = session_gap_seconds


def check(state: UserState, day: int, eid_hash: int | None, rules: StateRules) -> str:
    """The stateful checks of §6 for an event of `day` carrying `eid_hash`, in order: too_late,
    then duplicate. APPLIED when neither."""
    if state.T >= 0:
        oldest = day_of(state.T, rules.tz) - STATE_DAYS + 1
        if day < oldest:
            return TOO_LATE
        if eid_hash is not None:
            seen = state.event_ids.get(eid_hash)
            if seen is not None and seen >= oldest:
                return DUPLICATE
    return APPLIED


def apply(state: UserState, ev: Event, categories: tuple[int, ...], rules: StateRules) -> str:
    """Apply one event in log order; returns APPLIED, TOO_LATE or DUPLICATE (state unchanged
    unless APPLIED). `categories` are the item's category ks at this moment (§1.2)."""
    d = day_of(ev.ts, rules.tz)
    h = None if ev.event_id is None else event_id_hash(ev.event_id)
    outcome = check(state, d, h, rules)
    if outcome != APPLIED:
        return outcome
    bucket = state.days.get(d)
    if bucket is None:
        bucket = state.days[d] = DayBucket()
    a = ev.action
    actions = bucket.actions
    actions[a] = actions.get(a, 0) + 1
    if ev.dwell_ms is not None:
        bucket.dwell_ms += ev.dwell_ms
        bucket.dwell_n += 1
    if categories:
        cats = bucket.cats
        for k in categories:
            cats[(k, a)] = cats.get((k, a), 0) + 1
    add_timestamp(bucket.runs, ev.ts, rules.gap)
    items = state.items
    if items.get(ev.item_id, -1) < d:
        items[ev.item_id] = d
    if h is not None and state.event_ids.get(h, -1) < d:
        state.event_ids[h] = d
    if ev.ts > state.T:
        moved_day = state.T < 0 or d != day_of(state.T, rules.tz)
        state.T = ev.ts
        if moved_day:
            prune(state, d)
    return APPLIED


def prune(state: UserState, current_day: int) -> None:
    """Drop what lies before the 30-day window ending at current_day."""
    oldest = current_day - STATE_DAYS + 1
    for d in [d for d in state.days if d < oldest]:
        del state.days[d]
    if any(d < oldest for d in state.items.values()):
        state.items = {i: d for i, d in state.items.items() if d >= oldest}
    if any(d < oldest for d in state.event_ids.values()):
        state.event_ids = {h: d for h, d in state.event_ids.items() if d >= oldest}
