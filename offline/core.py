"""The feature core behind one seam: users' events in log order in, their profiles out. Every
offline engine (local processes, Spark) reaches the feature code only through these functions.

Many users at once (`run_users`, `profiles_many_at`) run on the columnar core: the §6 stateful
rules decided from each user's event arrays and the states stacked from the applied events
(features.columnar.logs), all of them evaluated in one call (evaluate_stack; extra features
included). A user whose log has no closed form (an event id repeated with another timestamp)
has its events applied one by one instead (`replay`: the columnar core's per-event apply, as
the stream's), and is evaluated together with evaluate_many. One user at a time (`replay`,
`evaluate`, `profiles_at`) is that sequential path. tests/unit/features/test_columnar_logs.py holds
both against the per-user reference (features.state, features.profile).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from features import columnar
from features.columnar import logs
from features.columnar.evaluate import evaluate_stack
from features.columnar.layout import ColumnarState
from features.columnar.update import apply
from features.events import Event
from features.profile import Profile
from features.runtime import FeatureRuntime
from features.state import APPLIED, DUPLICATE, event_id_hash


@dataclass
class Replay:
    """A user's state after its events, and what became of each event."""
    state: ColumnarState
    applied: int = 0
    duplicates: int = 0
    too_late: list[tuple[int, int]] = field(default_factory=list)   # (event index, user T then)


def replay(rt: FeatureRuntime, events: Sequence[Event],
           state: ColumnarState | None = None) -> Replay:
    """Apply one user's events in log order with every §6 rule (too_late, duplicate), to a new
    state or on top of `state` (the columnar core's per-event apply, as the stream's)."""
    catalog, rules = rt.catalog, rt.engine.rules
    out = Replay(ColumnarState.new() if state is None else state)
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


def evaluate(rt: FeatureRuntime, user_id: int, state: ColumnarState, T: int) -> Profile:
    """The profile as of T (T >= the state's T); an empty state gives the default profile."""
    if T < state.T:
        raise ValueError(f"as_of {T} is before the user's T {state.T}")
    return columnar.evaluate_many(rt.engine, [user_id], [state], [T])[0]


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
    state = ColumnarState.new()
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



# ---------------------------------------------------------------- many users at once

@dataclass
class Log:
    """Many users' valid events as columns: grouped by user, users ascending, each user's
    events in log order. dwell_ms and eid_hash are -1 where the event has none; event_id
    (a list or a pyarrow array) is read only for users that take the sequential path."""
    user: np.ndarray
    ts: np.ndarray
    item: np.ndarray
    action: np.ndarray
    dwell_ms: np.ndarray
    eid_hash: np.ndarray
    event_id: Any

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def of_events(cls, events: Sequence[Event]) -> "Log":
        """Events already grouped by user (users ascending) in log order."""
        return cls(np.array([e.user_id for e in events], dtype=np.int64),
                   np.array([e.ts for e in events], dtype=np.int64),
                   np.array([e.item_id for e in events], dtype=np.int64),
                   np.array([e.action for e in events], dtype=np.int64),
                   np.array([-1 if e.dwell_ms is None else e.dwell_ms for e in events],
                            dtype=np.int64),
                   np.array([-1 if e.event_id is None else event_id_hash(e.event_id)
                             for e in events], dtype=np.int64),
                   [e.event_id for e in events])

    def events(self, idx: np.ndarray) -> list[Event]:
        """The events at these positions, as `Event`s (for the sequential path)."""
        ids = [self.event_id[i] for i in idx.tolist()]
        return [Event(u, i, t, a, None if d < 0 else d, e) for u, i, t, a, d, e in zip(
            self.user[idx].tolist(), self.item[idx].tolist(), self.ts[idx].tolist(),
            self.action[idx].tolist(), self.dwell_ms[idx].tolist(), ids)]


@dataclass
class Users:
    """The outcome of `run_users`: a profile per user (users ascending) and what became of
    each event."""
    user_ids: list[int]
    profiles: list[Profile]
    applied: int
    duplicates: int
    too_late: list[tuple[int, int]]     # (event index in the log, the user's T then)


def run_users(rt: FeatureRuntime, log: Log, as_of: int | None = None,
              with_metrics: bool = False) -> Users:
    """Every user of the log through every §6 rule, evaluated as of its T (or as_of, when
    later): what `replay` + `evaluate` give user by user."""
    engine, tz = rt.engine, rt.engine.tz
    j = logs.judge(log.user, log.ts, log.eid_hash, tz)
    seq_user = j.sequential
    seq_ev = seq_user[j.seg]
    uids = log.user[j.starts]
    too_late = np.flatnonzero(j.too_late & ~seq_ev)
    duplicates = int(np.count_nonzero(j.duplicate & ~seq_ev))
    out = Users(uids.tolist(), [], 0, duplicates, [])
    out.too_late = list(zip(too_late.tolist(), j.t_before[too_late].tolist()))
    out.applied = int(np.count_nonzero(~seq_ev)) - len(too_late) - duplicates

    vec = np.flatnonzero(~seq_user)
    profiles: list[Profile | None] = [None] * len(uids)
    if len(vec):
        keep = np.flatnonzero(logs.in_state(j, log.ts, tz) & ~seq_ev)
        remap = np.cumsum(~seq_user) - 1
        owner = remap[j.seg[keep]]
        o = np.argsort((owner << 41) | log.ts[keep], kind="stable")
        order, owner = keep[o], owner[o]
        T = j.T[vec]
        st = _stack(rt, owner, len(vec), log, order, T)
        at = T if as_of is None else np.maximum(T, as_of)
        for u, p in zip(vec.tolist(), evaluate_stack(engine, uids[vec].tolist(), st, at,
                                                     with_metrics)):
            profiles[u] = p
    seq = np.flatnonzero(seq_user)
    if len(seq):
        ends = np.append(j.starts[1:], len(log))
        states, times = [], []
        for u in seq.tolist():
            idx = np.arange(j.starts[u], ends[u])
            run = replay(rt, log.events(idx))
            out.applied += run.applied
            out.duplicates += run.duplicates
            out.too_late += [(int(idx[i]), t) for i, t in run.too_late]
            states.append(run.state)
            times.append(run.state.T if as_of is None else max(as_of, run.state.T))
        for u, p in zip(seq.tolist(), columnar.evaluate_many(
                engine, uids[seq].tolist(), states, times, with_metrics)):
            profiles[u] = p
        out.too_late.sort()
    out.profiles = profiles      # type: ignore[assignment]
    return out


def _stack(rt: FeatureRuntime, owner: np.ndarray, U: int, log: Log, idx: np.ndarray,
           T: np.ndarray):
    """The stacked states of U owners holding the log's events `idx` (sorted by owner, then
    timestamp)."""
    item = log.item[idx]
    engine = rt.engine
    return logs.stack(owner, U, log.ts[idx], item, log.action[idx], log.dwell_ms[idx], T,
                      logs.Categories.of(item, rt.catalog.categories), engine.tz, engine.gap,
                      list(engine.action_names.values()))


def profiles_many_at(rt: FeatureRuntime, log: Log, label_user: Sequence[int],
                     label_time: Sequence[int]) -> list[Profile]:
    """The profile of each (label_user[v], label_time[v]) as `profiles_at` defines it: built
    from that user's events with timestamp <= the time, in log order, evaluated as of it. A
    user without such events gets the default profile."""
    engine, tz = rt.engine, rt.engine.tz
    lu = np.asarray(label_user, dtype=np.int64)
    lt = np.asarray(label_time, dtype=np.int64)
    j = logs.judge(log.user, log.ts, log.eid_hash, tz)
    seq_user = j.sequential
    uids = log.user[j.starts]
    seg = np.searchsorted(uids, lu)
    known = seg < len(uids)
    known[known] = uids[seg[known]] == lu[known]
    seg = np.where(known, seg, -1)
    on_seq = np.zeros(len(lu), dtype=bool)
    on_seq[known] |= seq_user[seg[known]]
    out: list[Profile | None] = [None] * len(lu)
    vec = np.flatnonzero(~on_seq)
    if len(vec):
        order, keyed = logs.keyed_timestamps(j.seg, log.ts)
        view, pos = logs.point_in_time(keyed, seg[vec], lt[vec], tz)
        ev = order[pos]
        keep = ~j.later[ev]
        view, ev = view[keep], ev[keep]
        T = np.full(len(vec), -1, dtype=np.int64)
        if len(ev):
            last = np.flatnonzero(np.append(view[1:] != view[:-1], True))
            T[view[last]] = log.ts[ev[last]]
        st = _stack(rt, view, len(vec), log, ev, T)
        for v, p in zip(vec.tolist(), evaluate_stack(engine, lu[vec].tolist(), st, lt[vec],
                                                     False)):
            out[v] = p
    seq = np.flatnonzero(on_seq)
    if len(seq):
        ends = np.append(j.starts[1:], len(log))
        by_user: dict[tuple[int, int], list[int]] = {}
        for v in seq.tolist():
            by_user.setdefault((int(seg[v]), int(lu[v])), []).append(v)
        for (s, _), views in by_user.items():
            events = log.events(np.arange(j.starts[s], ends[s])) if s >= 0 else []
            got = profiles_at(rt, int(lu[views[0]]), events, [int(lt[v]) for v in views])
            for v in views:
                out[v] = got[int(lt[v])]
    return out      # type: ignore[return-value]
