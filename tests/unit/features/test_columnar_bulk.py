"""The bulk evaluation (issue 25) equals the former columnar code, kept as its reference, and
the reference FeatureEngine, value for value:

- `Stack.from_states` (one join, sections read with numpy) = `Stack.from_states_by_kind`;
- `window_arrays` (cumulative sums over rows) = `window_arrays_reference` ([user, age] matrix);
- `round6` = Python's `round(x, 6)` on floats at and around every rounding boundary;
- `_top_matrix` = `_interest_tags_reference`;
- `_evaluate_stack` (users grouped, profiles filled in bulk) = `_evaluate_stack_reference`
  and `FeatureEngine.evaluate`, profiles and digests, for many users in one call: empty
  states, users with one event, idle users, ties in scores, different as_of times.
"""
from __future__ import annotations

import math

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from features.columnar import decode, encode, evaluate_many, finish, from_reference
from features.columnar import update as capply
from features.columnar.aggregates import window_arrays, window_arrays_reference
from features.columnar.evaluate import (
    _category_totals,
    _category_totals_reference,
    _evaluate_stack,
    _evaluate_stack_reference,
    _interest_tags_reference,
    _top_matrix,
    changed_profiles,
    compiled,
    round6,
)
from features.columnar.layout import ColumnarState
from features.columnar.stack import Stack
from features.config import parse_config
from features.events import Event
from features.mapping_index import MappingIndex
from features.profile import FeatureEngine, Profile, digest_of
from features.state import UserState, apply
from tests.unit.features.test_columnar import (
    D0,
    DAY,
    SCALE,
    SETTINGS,
    build,
    event_lists,
    same_profile,
    same_value,
    worlds,
)

LATER = [0, 0, 1, 3600, DAY - 1, DAY, 6 * DAY + 5, 29 * DAY, 31 * DAY, 45 * DAY]


def fields(p: Profile) -> dict:
    """A profile's fields (its __dict__ without the carried digest)."""
    return {k: v for k, v in vars(p).items() if k != "_digest"}


def canonical(s: Stack) -> dict[str, np.ndarray]:
    """A stack's arrays in the caller's order of users (from_states_by_kind groups them)."""
    inv = np.argsort(s.order, kind="stable")
    rows = np.concatenate([np.arange(s.row_start[p], s.row_start[p] + s.D[p]) for p in inv]
                          + [np.zeros(0, dtype=np.int64)]).astype(np.int64)
    where = np.empty(len(rows), dtype=np.int64)
    where[rows] = np.arange(len(rows))
    out = {"T": s.T[inv], "D": s.D[inv], "base": s.base[inv], "run_n": s.run_n[inv],
           "row_codes": s.row_codes[rows]}
    for k in ("row_day", "row_total", "row_dwell_ms", "row_dwell_n", "row_items"):
        out[k] = getattr(s, k)[rows]
    for prefix, fields in (("cat", ("key", "count")), ("run", ("first", "last"))):
        new_row = where[getattr(s, f"{prefix}_row")]
        o = np.argsort(new_row, kind="stable")
        out[f"{prefix}_row"] = new_row[o]
        for f in fields:
            out[f"{prefix}_{f}"] = getattr(s, f"{prefix}_{f}")[o]
    return out


def same_stack(a: Stack, b: Stack) -> None:
    ca, cb = canonical(a), canonical(b)
    for k in ca:
        assert ca[k].shape == cb[k].shape and ca[k].dtype == cb[k].dtype, k
        assert (ca[k] == cb[k]).all(), k


@st.composite
def users(draw, world, max_users: int = 8):
    """Reference states: empty, one event, idle (old events only), busy; as_of times."""
    out = []
    for _ in range(draw(st.integers(1, max_users))):
        kind = draw(st.sampled_from(["events", "events", "empty", "one", "many"]))
        if kind == "empty":
            events = []
        elif kind == "one":
            events = draw(event_lists(world, 1))
        else:
            events = draw(event_lists(world, 80 if kind == "many" else 20))
        ref = build(world, events)
        out.append((ref, max(ref.T, D0) + draw(st.sampled_from(LATER))))
    return out


def states_of(world, refs, draw) -> list[ColumnarState]:
    tz = world.engine.tz
    out = []
    for r in refs:
        s = from_reference(r, tz)
        if draw(st.booleans()):            # a record read back, or a state changed in place
            s = decode(encode(s), tz)
        out.append(s)
    return out


@settings(max_examples=50 * SCALE, **SETTINGS)
@given(st.data())
def test_stack_equals_the_stack_by_kind(data):
    world = data.draw(worlds())
    pairs = data.draw(users(world))
    states = states_of(world, [r for r, _ in pairs], data.draw)
    # widen some counters in place (different widths across users of one call)
    for s in states:
        if s.D and data.draw(st.booleans()):
            capply.apply(s, Event(1, 7, s.T, list(world.engine.action_names.values())[0],
                                  86_400_000, None), (1,), world.engine.rules)
    codes = data.draw(st.sampled_from([list(world.engine.action_names.values()), [0, 1, 2],
                                       [], [255, 10, 300, -1]]))
    same_stack(Stack.from_states(states, world.engine.tz, codes),
               Stack.from_states_by_kind(states, world.engine.tz, codes))


@settings(max_examples=50 * SCALE, **SETTINGS)
@given(st.data())
def test_window_arrays_and_top_categories_equal_the_former_ones(data):
    world = data.draw(worlds())
    engine, tz = world.engine, world.engine.tz
    pairs = data.draw(users(world))
    states = states_of(world, [r for r, _ in pairs], data.draw)
    comp = compiled(engine)
    st_ = Stack.from_states(states, tz, comp.codes)
    today = (np.array([t for _, t in pairs], dtype=np.int64) + tz) // 86400
    got = window_arrays(st_, today, engine.windows, tz, engine.gap, engine.action_names)
    want = window_arrays_reference(st_, today, engine.windows, tz, engine.gap,
                                   engine.action_names)
    assert list(got) == list(want)
    for W in want:
        assert list(got[W]) == list(want[W])
        for k in want[W]:
            same_value(got[W][k].tolist(), want[W][k].tolist(), f"{W}.{k}")
    lean = window_arrays(st_, today, engine.windows, tz, engine.gap, engine.action_names,
                         rates=False)
    for W in want:
        assert list(lean[W]) == [k for k in want[W] if not k.startswith("rate_")]
        for k in lean[W]:
            same_value(lean[W][k].tolist(), want[W][k].tolist(), f"{W}.{k}")
    top = _top_matrix(engine, comp, st_, today)
    score, counts = _category_totals(engine, comp, st_, today)
    score_r, counts_r = _category_totals_reference(engine, comp, st_, today)
    assert score.tolist() == score_r.tolist() and counts.tolist() == counts_r.tolist()
    assert [[p for p in row if p >= 0] for row in top.tolist()] == \
        _interest_tags_reference(engine, comp, st_, today)


def near(x: float) -> list[float]:
    return [x, math.nextafter(x, 0), math.nextafter(x, math.inf),
            math.nextafter(math.nextafter(x, math.inf), math.inf)]


@settings(max_examples=300 * SCALE, **SETTINGS)
@given(st.lists(st.one_of(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.integers(0, 10 ** 9).map(lambda n: (n + 0.5) / 1e6),        # ties, as decimals
    st.integers(0, 10 ** 12).map(lambda n: n / 2 ** 20),            # binary fractions
    st.sampled_from([0.0, -0.0, 5e-7, 1.5e-6, 2.5e-6, 0.0000005, 1e15 + 0.5, 2.0 ** 50,
                     2.0 ** 53, 1e300, math.inf, -math.inf, math.nan, -2.5e-6,
                     0.1234565, 1.0000005, 1234.5678905])), max_size=40))
def test_round6_is_pythons_round(xs):
    xs = [y for x in xs for y in near(x)]
    got = round6(np.array(xs, dtype=np.float64)).tolist()
    for x, g in zip(xs, got):
        want = round(x, 6)
        assert (g == want and math.copysign(1, g) == math.copysign(1, want)) or \
            (math.isnan(g) and math.isnan(want)), (x, g, want)


@settings(max_examples=60 * SCALE, **SETTINGS)
@given(st.data())
def test_bulk_evaluation_equals_the_reference(data):
    world = data.draw(worlds())
    engine, tz = world.engine, world.engine.tz
    pairs = data.draw(users(world, 12))
    refs = [r for r, _ in pairs]
    as_of = [t for _, t in pairs]
    states = states_of(world, refs, data.draw)
    uids = [1000 + 7 * i for i in range(len(refs))]
    with_metrics = data.draw(st.booleans())
    comp = compiled(engine)
    st_ = Stack.from_states(states, tz, comp.codes)
    got, digests = _evaluate_stack(engine, uids, st_, as_of, with_metrics, False, states)
    want = _evaluate_stack_reference(engine, uids, st_, as_of, with_metrics, False, states)
    for p, w, uid, r, T in zip(got, want, uids, refs, as_of):
        assert type(p) is Profile and fields(p) == fields(w)
        same_profile(p, w)
        ref = engine.evaluate(uid, r, T)
        if not with_metrics and not engine.extensions:
            ref = Profile(**{**fields(ref), "metrics": {}})
        same_profile(p, ref)
        assert list(fields(p)) == list(vars(ref))
        # a digest carried by the profile is the one its arrays give
        assert p.digest() == digest_of(p.features) == ref.digest()
    if digests is not None:
        assert digests == [digest_of(p.features) for p in got]
    # lists are the profile's own (not shared with another profile)
    ids = [id(x) for p in got for x in (p.interest_tags, p.behavior_preferences,
                                        *p.features.values())]
    assert len(ids) == len(set(ids))
    # scheduled runs: some users carry their published digest
    for s, p in zip(states, got):
        s.published_digest = p.digest() if data.draw(st.booleans()) else \
            data.draw(st.sampled_from([0, 1, 2 ** 62 - 1]))
    changed = changed_profiles(engine, uids, states, as_of)
    want = _evaluate_stack_reference(engine, uids, st_, as_of, False, True, states)
    for c, w, p, s in zip(changed, want, got, states):
        assert (c is None) == (w is None) == (p.digest() == s.published_digest)
        if c is not None:
            same_profile(c, w)


@settings(max_examples=30 * SCALE, **SETTINGS)
@given(st.data())
def test_finish_changed_follows_the_digest(data):
    world = data.draw(worlds())
    engine = world.engine
    pairs = [(r, t) for r, t in data.draw(users(world)) if not r.empty]
    if not pairs:
        return
    states = states_of(world, [r for r, _ in pairs], data.draw)
    ups = [capply.ColumnarUpdate(i, s, applied=1) for i, s in enumerate(states)]
    for up, s in zip(ups, states):
        s.published_digest = data.draw(st.sampled_from([0, engine.evaluate(
            up.user_id, [r for r, _ in pairs][up.user_id]).digest()]))
    finish(engine, ups, engine.cfg.behavior_preferences.time_windows, with_metrics=False)
    for up, (r, _) in zip(ups, pairs):
        ref = engine.evaluate(up.user_id, r)
        same_profile(up.profile, ref if engine.extensions else
                     Profile(**{**fields(ref), "metrics": {}}))
        assert up.changed == (up.profile.digest() != up.state.published_digest)


def test_ties_and_rounding_boundaries_in_one_call():
    """Many users whose scores tie at 6 decimals or sit on a rounding boundary, in one call:
    config order breaks the ties, as the reference's."""
    cfg = parse_config({"interest_tags": {
        "categories": {f"c{i}": [i] for i in range(1, 7)}, "min_frequency": 1,
        "max_tags": 4, "decay_factor": 0.5,
        "action_weights": {0: 1e-6, 1: 5e-7, 2: 1.0}}}, env={})
    engine = FeatureEngine(cfg, MappingIndex({"106": [f"c{i}" for i in (3, 1, 6, 2, 5, 4)],
                                              "107": [r.name for r in
                                                      cfg.behavior_preferences.rules]}))
    refs = []
    rng = np.random.default_rng(5)
    for u in range(300):
        s = UserState()
        for j in range(int(rng.integers(0, 12))):
            apply(s, Event(u, j, D0 + int(rng.integers(0, 5)) * DAY + j, int(rng.integers(0, 3)),
                           None, None), (int(rng.integers(1, 7)),), engine.rules)
        refs.append(s)
    as_of = [max(r.T, D0) + int(rng.choice([0, DAY, 3 * DAY])) for r in refs]
    got = evaluate_many(engine, list(range(300)), [from_reference(r, 0) for r in refs], as_of)
    for u, (p, r, T) in enumerate(zip(got, refs, as_of)):
        same_profile(p, engine.evaluate(u, r, T))
        assert orjson.dumps(p.to_record(1, "daily", 0.0)) == \
            orjson.dumps(engine.evaluate(u, r, T).to_record(1, "daily", 0.0))


def test_wide_configs_and_empty_calls():
    """Many categories and rules: the digest cache's key does not fit in one int (a tuple is
    used) and the rules' combinations are compared as rows; and a call with no users."""
    rules = [{"name": f"r{i}", "metric": "actions", "window_days": 30, "op": ">=",
              "threshold": i % 7} for i in range(70)]
    cfg = parse_config({
        "interest_tags": {"categories": {f"c{i}": [i] for i in range(1, 41)},
                          "min_frequency": 1, "max_tags": 10, "decay_factor": 0.9},
        "behavior_preferences": {"rules": rules, "max_preferences": 65}}, env={})
    engine = FeatureEngine(cfg, MappingIndex({
        "106": [f"c{i}" for i in range(40, 0, -1)], "107": [r["name"] for r in rules]}))
    assert compiled(engine).key_bits is None
    rng = np.random.default_rng(11)
    refs = []
    for u in range(120):
        s = UserState()
        for j in range(int(rng.integers(0, 30))):
            apply(s, Event(u, j, D0 + int(rng.integers(0, 10)) * DAY + j, int(rng.integers(0, 3)),
                           None, None), tuple(int(k) for k in rng.integers(1, 41, size=2)),
                  engine.rules)
        refs.append(s)
    states = [from_reference(r, 0) for r in refs]
    got = evaluate_many(engine, list(range(120)), states)
    for u, (p, r) in enumerate(zip(got, refs)):
        if not r.empty:
            same_profile(p, engine.evaluate(u, r))
    for s, p in zip(states[::2], got[::2]):
        s.published_digest = p.digest()
    changed = changed_profiles(engine, list(range(120)), states)
    assert [c is None for c in changed] == [p.digest() == s.published_digest
                                            for p, s in zip(got, states)]
    assert evaluate_many(engine, [], []) == []
    assert changed_profiles(engine, [], []) == []
    finish(engine, [], (1, 7, 30))
