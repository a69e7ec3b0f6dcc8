"""The per-user feature core behind one seam: one user's events in log order in, its state and
its profiles out. Every offline engine (local processes, Spark) reaches the feature code only
through these functions, so a faster core (features/columnar/) replaces the reference
`features.state.apply` + `FeatureEngine.evaluate` here and nowhere else.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from features.events import Event
from features.profile import Profile
from features.runtime import FeatureRuntime
from features.state import APPLIED, DUPLICATE, UserState, apply


@dataclass
class Replay:
    """A user's state after its events, and what became of each event."""
    state: UserState
    applied: int = 0
    duplicates: int = 0
    too_late: list[tuple[int, int]] = field(default_factory=list)   # (event index, user T then)


def replay(rt: FeatureRuntime, events: Sequence[Event], state: UserState | None = None) -> Replay:
    """Apply one user's events in log order with every §6 rule (too_late, duplicate), to a new
    state or on top of `state`."""
    catalog, rules = rt.catalog, rt.engine.rules
    out = Replay(UserState() if state is None else state)
    st = out.state
    for i, ev in enumerate(events):
        t_before = st.T
        outcome = apply(st, ev, catalog.categories(ev.item_id), rules)
        if outcome == APPLIED:
            out.applied += 1
        elif outcome == DUPLICATE:
            out.duplicates += 1
        else:
            out.too_late.append((i, t_before))
    return out


def evaluate(rt: FeatureRuntime, user_id: int, state: UserState, T: int) -> Profile:
    """The profile as of T (T >= the state's T); an empty state gives the default profile."""
    return rt.engine.evaluate(user_id, state, T)


def profiles_at(rt: FeatureRuntime, user_id: int, events: Sequence[Event],
                times: Sequence[int]) -> dict[int, Profile]:
    """{T: the profile as of T built from the events with timestamp <= T, in log order} for each
    T in `times` (FEATURES.md, point-in-time profiles).

    Times are visited in increasing order and the state is carried forward while the events
    that enter between two times all stand after every event already applied; that holds
    throughout when the events are in time order, so that case is one pass. Otherwise the
    state is rebuilt for that time (an out-of-order event can change what is too late or a
    duplicate), at most one pass per distinct time."""
    by_time = sorted(range(len(events)), key=lambda i: events[i].ts)
    out: dict[int, Profile] = {}
    state = UserState()
    last_pos = -1          # highest log position applied to `state`
    taken = 0              # events of by_time with ts <= the previous time
    for T in sorted(set(times)):
        start = taken
        while taken < len(by_time) and events[by_time[taken]].ts <= T:
            taken += 1
        entering = sorted(by_time[start:taken])
        if entering and entering[0] < last_pos:
            state = replay(rt, [events[i] for i in sorted(by_time[:taken])]).state
        elif entering:
            replay(rt, [events[i] for i in entering], state)
        if entering:
            last_pos = max(last_pos, entering[-1])
        out[T] = evaluate(rt, user_id, state, T)
    return out

