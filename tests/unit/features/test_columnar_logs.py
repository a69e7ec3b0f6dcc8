"""Whole logs on the columnar core (features.columnar.logs through offline.core) equal the
reference `features.state.apply`, event by event, value for value:

- every event's outcome (applied, too_late with the user's T then, duplicate);
- each user's state after the log (day rows and their counters, items' last days, category
  entries, session runs), compared as stacked arrays with the reference state's;
- profiles (106/107/108/110, names, level, type, confidence) as of T and as of a later time,
  and point-in-time profiles for random label times, including before the first event;
- users whose log has no closed form (an id repeated with another timestamp) are found and
  take the sequential path.

Random logs hit every rule: events in and out of time order, too late by a day or by months,
re-sent events (same line later), ids reused with another timestamp, equal timestamps, items
with zero, one or several categories, dwell or none, random configs (time zone, session gap,
windows, weights).
"""
from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.columnar import from_reference, logs
from features.columnar.stack import Stack
from features.events import Event
from features.profile import FeatureEngine
from features.state import APPLIED, DUPLICATE, TOO_LATE, UserState, apply
from offline import core
from tests.unit.features.test_columnar import SETTINGS, World, worlds

DAY = 86400
D0 = 20000 * DAY
ITEMS = [0, 1, 2, 3, 7, 255, 256, 300, 70_000, 2 ** 40, 2 ** 63 - 1]
STEPS = [0, 0, 1, 5, 60, 1799, 1800, 1801, 3600, 7200, 40_000, DAY - 1, DAY, DAY + 1,
         3 * DAY, 7 * DAY, 29 * DAY, 30 * DAY, -1, -100, -3600, -DAY, -3 * DAY, -28 * DAY,
         -29 * DAY, -30 * DAY, -31 * DAY, -90 * DAY]


def item_categories(world: World):
    """A fixed choice of ks per item (zero, one or several; offline catalogs are static)."""
    def categories(item: int) -> tuple[int, ...]:
        h = (item * 2654435761) % 97
        return tuple(k for k in world.ks if (h >> (k % 5)) & 1)
    return categories


class Runtime:
    """What offline.core reads of a FeatureRuntime."""

    def __init__(self, engine: FeatureEngine, categories):
        self.engine = engine
        self.catalog = type("Catalog", (), {"categories": staticmethod(categories)})()


def random_log(rng: random.Random, world: World, users: int, max_events: int) -> list[Event]:
    """Users' events interleaved at random (each user's log order kept)."""
    codes = list(world.cfg.events.action_types.values())
    per_user: list[list[Event]] = []
    for u in range(users):
        uid = rng.choice([u, u * 7919 + 3, 2 ** 62 + u])
        n = rng.randint(1, max_events)
        t = D0 + rng.randint(0, DAY)
        evs: list[Event] = []
        reuse = rng.random() < 0.2           # ids reused with other timestamps
        for i in range(n):
            if evs and rng.random() < 0.12:  # a re-sent event: the same line again, later
                evs.append(rng.choice(evs))
                continue
            t = max(0, t + rng.choice(STEPS))
            eid = rng.choice([None, f"e{i}", f"e{i}", f"e{i}", f"x{rng.randint(0, 3)}"]
                             if reuse else [None, f"e{i}", f"e{i}", f"e{i}"])
            evs.append(Event(uid, rng.choice(ITEMS), t, rng.choice(codes),
                             rng.choice([None, None, 0, 1234, 86_400_000]), eid))
        per_user.append(evs)
    # interleave, keeping each user's order
    out: list[Event] = []
    cursors = [0] * users
    while len(out) < sum(map(len, per_user)):
        u = rng.choice([i for i in range(users) if cursors[i] < len(per_user[i])])
        out.append(per_user[u][cursors[u]])
        cursors[u] += 1
    return out


def reference(world: World, events: list[Event]) -> tuple[dict[int, UserState], list]:
    """The reference states and each event's (outcome, T before)."""
    categories = item_categories(world)
    states: dict[int, UserState] = {}
    outcomes = []
    for ev in events:
        s = states.setdefault(ev.user_id, UserState())
        before = s.T
        outcomes.append((apply(s, ev, categories(ev.item_id), world.engine.rules), before))
    return states, outcomes


def grouped(events: list[Event]) -> list[int]:
    """Positions of the events grouped by user (users ascending), log order kept."""
    return sorted(range(len(events)), key=lambda i: (events[i].user_id, i))


def per_user(st: Stack, u: int) -> tuple:
    """One stacked user's arrays as plain values (rows, entries, runs)."""
    p = int(np.flatnonzero(st.order == u)[0])
    rows = np.flatnonzero(st.row_user == p)
    cats = np.isin(st.cat_row, rows)
    runs = np.isin(st.run_row, rows)
    day = {int(r): int(st.row_day[r]) for r in rows}
    return (int(st.T[p]),
            [(day[r], int(st.row_total[r]), st.row_codes[r].tolist(), int(st.row_dwell_ms[r]),
              int(st.row_dwell_n[r]), int(st.row_items[r])) for r in rows.tolist()],
            [(day[int(r)], int(k), int(c)) for r, k, c in
             zip(st.cat_row[cats], st.cat_key[cats], st.cat_count[cats])],
            [(day[int(r)], int(f), int(last)) for r, f, last in
             zip(st.run_row[runs], st.run_first[runs], st.run_last[runs])])


def no_extensions(world: World) -> World:
    e = world.engine
    return World(world.cfg, FeatureEngine(world.cfg, e.index, extensions={}), world.ks)


def check_log(world: World, events: list[Event], rng: random.Random) -> dict[str, int]:
    """Everything the module doc lists, for one log; returns what it hit."""
    engine = world.engine
    tz = engine.tz
    states, outcomes = reference(world, events)
    g = grouped(events)
    ev = [events[i] for i in g]
    log = core.Log.of_events(ev)
    j = logs.judge(log.user, log.ts, log.eid_hash, tz)
    uids = log.user[j.starts].tolist()
    assert uids == sorted(states)
    hit = {"too_late": 0, "duplicate": 0, "out_of_order": 0, "sequential": 0, "users": 0}
    for u, uid in enumerate(uids):
        idx = np.flatnonzero(j.seg == u)
        ids = [ev[i].event_id for i in idx]
        by_id = {}
        for i in idx:
            if ev[i].event_id is not None:
                by_id.setdefault(ev[i].event_id, set()).add(ev[i].ts)
        assert bool(j.sequential[u]) == any(len(t) > 1 for t in by_id.values()), ids
        hit["sequential"] += bool(j.sequential[u])
        hit["users"] += 1
        if j.sequential[u]:
            continue
        for i in idx.tolist():
            want, before = outcomes[g[i]]
            got = TOO_LATE if j.too_late[i] else DUPLICATE if j.duplicate[i] else APPLIED
            assert got == want, (uid, i)
            if want == TOO_LATE:
                assert j.t_before[i] == before
            hit["too_late"] += want == TOO_LATE
            hit["duplicate"] += want == DUPLICATE
            hit["out_of_order"] += want == APPLIED and 0 <= before and ev[i].ts < before
    # the states, as stacked arrays
    vec = [u for u in range(len(uids)) if not j.sequential[u]]
    keep = np.flatnonzero(logs.in_state(j, log.ts, tz) & ~j.sequential[j.seg])
    remap = np.cumsum(~j.sequential) - 1
    owner = remap[j.seg[keep]]
    o = np.lexsort((log.ts[keep], owner))
    rt = Runtime(engine, item_categories(world))
    got_st = core._stack(rt,  # noqa: SLF001 (the internal step itself, against the reference)
                          owner[o], len(vec), log, keep[o], j.T[vec])
    want_st = Stack.from_states([from_reference(states[uids[u]], tz) for u in vec], tz,
                                list(engine.action_names.values()))
    for p in range(len(vec)):
        assert per_user(got_st, p) == per_user(want_st, p), uids[vec[p]]
    # profiles, as of T and later, through the seam (sequential users included)
    for as_of in (None, max(s.T for s in states.values()) + rng.choice([0, 1, DAY, 40 * DAY])):
        run = core.run_users(rt, log, as_of)
        assert run.user_ids == uids
        for uid, p in zip(uids, run.profiles):
            s = states[uid]
            assert p == engine.evaluate(uid, s, s.T if as_of is None else max(as_of, s.T))
        ref = [o for o in outcomes]
        assert run.applied == sum(o == APPLIED for o, _ in ref)
        assert run.duplicates == sum(o == DUPLICATE for o, _ in ref)
        assert sorted((g[i], t) for i, t in run.too_late) == \
            sorted((i, t) for i, (o, t) in enumerate(ref) if o == TOO_LATE)
    # point-in-time profiles (labels before, between and after the events; unknown users)
    ts = [e.ts for e in events]
    shifts = [-DAY, -1, 0, 0, 1, 7 * DAY]
    labels = [(rng.choice(uids + [10 ** 6]), rng.choice(ts) + rng.choice(shifts))
              for _ in range(12)]
    labels = [(u, max(0, t)) for u, t in labels]
    got = core.profiles_many_at(rt, log, [u for u, _ in labels], [t for _, t in labels])
    for (uid, t), p in zip(labels, got):
        s = reference(world, [e for e in events if e.user_id == uid and e.ts <= t])[0]
        assert p == engine.evaluate(uid, s.get(uid, UserState()), t), (uid, t)
    return hit


def test_random_logs_hit_every_rule_and_equal_the_reference():
    """A fixed set of random logs on the default-like config of the first world."""
    from hypothesis import find
    world = no_extensions(find(worlds(), lambda w: True))
    rng = random.Random(14)
    total: dict[str, int] = {}
    for _ in range(60):
        hit = check_log(world, random_log(rng, world, rng.randint(1, 8), 40), rng)
        for k, v in hit.items():
            total[k] = total.get(k, 0) + v
    assert min(total.values()) > 3, total


@settings(max_examples=150, **SETTINGS)
@given(world=worlds(), seed=st.integers(0, 2 ** 32))
def test_logs_equal_the_reference_on_random_configs(world, seed):
    rng = random.Random(seed)                   # (extra features in some of the configs)
    check_log(world, random_log(rng, world, rng.randint(1, 5), 30), rng)


def test_extra_features_take_the_columnar_path(monkeypatch):
    from hypothesis import find
    world = find(worlds(), lambda w: bool(w.engine.extensions))
    rng = random.Random(3)

    def sequential_users(events: list[Event]) -> int:
        lg = core.Log.of_events([events[i] for i in grouped(events)])
        return int(logs.judge(lg.user, lg.ts, lg.eid_hash, world.engine.tz).sequential.sum())
    log = random_log(rng, world, 3, 20)
    while sequential_users(log):                # (an event id repeated at another time)
        log = random_log(rng, world, 3, 20)

    def sequential(*args, **kwargs):
        raise AssertionError("a user took the sequential path")
    monkeypatch.setattr(core, "replay", sequential)
    check_log(world, log, rng)


def test_empty_log():
    from hypothesis import find
    world = no_extensions(find(worlds(), lambda w: True))
    log = core.Log.of_events([])
    rt = Runtime(world.engine, item_categories(world))
    run = core.run_users(rt, log)
    assert run.user_ids == [] and run.profiles == [] and run.applied == 0
    (p,) = core.profiles_many_at(rt, log, [5], [1_700_000_000])
    assert p == world.engine.evaluate(5, UserState(), 1_700_000_000)


if __name__ == "__main__":
    pytest.main([__file__])
