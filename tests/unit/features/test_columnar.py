"""The columnar core (features/columnar) equals the reference value for value.

- apply on the v3 layout = features.state.apply (outcome and state, compared through
  `to_reference`, with encode/decode round trips between events);
- apply_events + finish = features.update.apply_events (counts, dead letters, profile,
  closed days' aggregates, final state);
- evaluate_many over many users = FeatureEngine.evaluate for each (ids, names, order, level,
  type, confidence, as_of, and every metric with its type), on random configs;
- the reference's records are the same format-4 records; the header is read and patched in
  place;
- the scheduled runs' helpers equal features.schedule / features.drift.

COLUMNAR_EXAMPLES multiplies the example counts (default 1: about 20 s in all on an idle
machine; COLUMNAR_EXAMPLES=20 for a long run).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import drift, schedule
from features.catalog import CategoryMatcher, ItemCatalog
from features.columnar import (
    ColumnarState,
    apply_events,
    changed_profiles,
    decode,
    encode,
    evaluate_many,
    finish,
    from_reference,
    has_data,
    metrics_many,
    to_reference,
)
from features.columnar import schedule as cschedule
from features.columnar import update as capply
from features.columnar.codec import hold_mark
from features.columnar.evaluate import category_totals_many
from features.columnar.layout import (
    CLOSED_DAY_AT,
    FORMAT,
    HASH_BYTES,
    HEADER_SIZE,
    MAX_AGE,
    RUN_BYTES,
    S_AGE,
    S_CAT,
    S_CODES,
    S_HASH,
    S_ITEM,
    S_NCAT,
    S_NID,
    S_NITEM,
    S_NRUN,
    S_RUN,
    W_ACT,
    W_CCOUNT,
    W_CKEY,
    W_DWELL_MS,
    W_ITEM,
    W_NCAT,
    W_NID,
    W_NITEM,
    W_NRUN,
    section_offsets,
)
from features.config import parse_config
from features.encoding import decode as decode_ref
from features.encoding import encode as encode_ref
from features.encoding import patch_header, read_header
from features.events import Event, EventParser, day_of
from features.mapping_index import MappingIndex
from features.metrics import category_totals
from features.profile import FeatureEngine, Profile
from features.runtime import FeatureRuntime
from features.state import DayBucket, StateRules, UserState, apply, check, event_id_hash
from features.update import apply_events as apply_events_ref

SCALE = int(os.environ.get("COLUMNAR_EXAMPLES", "1"))
DAY = 86400
D0 = 20000 * DAY
SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- strategies

@dataclass
class World:
    cfg: object
    engine: FeatureEngine
    ks: list[int]          # every category k in the mapping index (removed ones too)


ACTION_SETS = [{"exposure": 0, "click": 1, "conversion": 2}, {"view": 10, "like": 20,
                                                                "share": 255}, {"only": 0}]
THRESHOLDS = [0, 0.5, 1, 2, 5, 0.7, 60, 1 / 3, 0.25, 1800, 300, 1e-9, 7]


@st.composite
def worlds(draw) -> World:
    actions = draw(st.sampled_from(ACTION_SETS))
    codes = list(actions.values())
    windows = sorted(set(draw(st.lists(st.sampled_from([1, 2, 3, 7, 14, 29, 30]),
                                       min_size=1, max_size=4))))
    n_cats = draw(st.integers(1, 5))
    names = [f"c{i}" for i in range(n_cats)]
    categories = {n: [100 + i] for i, n in enumerate(names)}
    metric_names = ["actions", "active_days", "actions_per_active_day", "unique_items",
                    "unique_item_ratio", "avg_dwell_time", "sessions", "avg_session_duration",
                    *(f"rate_{a}" for a in actions)]
    rules = [{"name": f"r{i}", "metric": draw(st.sampled_from(metric_names)),
              "window_days": draw(st.sampled_from(windows)),
              "op": draw(st.sampled_from([">", ">=", "<", "<="])),
              "threshold": draw(st.sampled_from(THRESHOLDS)),
              "min_actions": draw(st.integers(0, 6))}
             for i in range(draw(st.integers(0, 5)))]

    def ascending(n):
        return sorted(set(draw(st.lists(st.sampled_from([0, 0.5, 1, 2, 5, 15, 30, 60, 300,
                                                         900, 1800, 1 / 3]),
                                        max_size=n))))

    raw = {
        "events": {"tz_offset_hours": draw(st.sampled_from([0, 8, -5, 5.5, 14, -12])),
                   "session_gap_seconds": draw(st.sampled_from([1, 60, 1800, 3600, 7200])),
                   "action_types": actions, "event_types": {}},
        "interest_tags": {
            "max_tags": draw(st.integers(1, 5)), "min_frequency": draw(st.integers(1, 4)),
            "decay_factor": draw(st.sampled_from([1.0, 0.95, 0.5, 0.999, 0.1, 1 / 3])),
            "window_days": draw(st.sampled_from(windows)),
            "action_weights": {c: draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 0.1, 1e16]))
                               for c in draw(st.lists(st.sampled_from(codes), unique=True))},
            "categories": categories},
        "behavior_preferences": {"time_windows": windows, "rules": rules,
                                 "max_preferences": draw(st.integers(1, 4))},
        "activity_levels": {"levels": draw(st.integers(1, 5)),
                            "window_days": draw(st.sampled_from(windows)),
                            "combine": draw(st.sampled_from(["actions", "min", "max",
                                                             "mean_floor"])),
                            "metrics": {"daily_actions": ascending(4),
                                        "session_duration": ascending(4)}},
        "user_types": {"window_days": draw(st.sampled_from(windows)),
                       "criteria": {"type_1": {"min_sessions": draw(st.integers(0, 5)),
                                               "min_actions": draw(st.integers(0, 20))}}},
    }
    if draw(st.booleans()):
        raw["extra_features"] = {"111": {"extractor": "dominant_action", "max_values": 1}}
    cfg = parse_config(raw, env={})
    # a mapping index with removed names: k is not position + 1, and states may hold ks that
    # no configured category has
    removed = [f"old{i}" for i in range(draw(st.integers(0, 3)))]
    order106 = draw(st.permutations(names + removed))
    order107 = draw(st.permutations([r["name"] for r in rules] + removed))
    index = MappingIndex({"106": list(order106), "107": list(order107)})
    return World(cfg, FeatureEngine(cfg, index), list(range(1, len(order106) + 1)))


OFFSETS = [0, 1, 5, 100, 1799, 1800, 1801, 3600, 3601, 7200, 40_000, DAY - 1, DAY, DAY + 1,
           3 * DAY, 7 * DAY, 29 * DAY, 30 * DAY, -1, -100, -3600, -DAY, -3 * DAY,
           -29 * DAY, -31 * DAY]
ITEMS = [0, 1, 2, 3, 255, 256, 300, 70_000, 2 ** 40, 2 ** 63 - 1]


@st.composite
def event_lists(draw, world: World, max_events: int = 40) -> list[Event]:
    codes = list(world.cfg.events.action_types.values())
    n = draw(st.integers(0, max_events))
    t = D0 + draw(st.integers(0, DAY))
    out = []
    for j in range(n):
        t = max(0, t + draw(st.sampled_from(OFFSETS)))
        out.append(Event(1, draw(st.sampled_from(ITEMS)), t, draw(st.sampled_from(codes)),
                         draw(st.sampled_from([None, None, 0, 1234, 86_400_000])),
                         draw(st.sampled_from([None, "a", "b", "c", f"e{j}", f"e{j}"]))))
    return out


def categories_of(world: World, ev: Event, draw=None) -> tuple[int, ...]:
    """A fixed pseudo-random choice of ks per (item, timestamp): items change categories."""
    h = (ev.item_id * 2654435761 + ev.ts // 50_000) % 97
    return tuple(k for k in world.ks if (h >> (k % 5)) & 1)


def build(world: World, events: list[Event]) -> UserState:
    s = UserState()
    for ev in events:
        apply(s, ev, categories_of(world, ev), world.engine.rules)
    return s


def parse_line(parser: EventParser, line: bytes, now: float):
    """An events-file line through the validator."""
    return parser.parse_line(line, now)


# ---------------------------------------------------------------- comparisons

def check_layout(s: ColumnarState) -> None:
    assert s.off == section_offsets(*s.counts(), s.w)
    assert s.off[-1] == len(s.buf)
    ages = s.ages()
    assert ages == sorted(ages, reverse=True) and len(set(ages)) == len(ages)
    assert all(a <= MAX_AGE for a in ages)
    for sec, ws, total in ((S_NCAT, W_NCAT, s.C), (S_NRUN, W_NRUN, s.R),
                           (S_NITEM, W_NITEM, s.I), (S_NID, W_NID, s.E)):
        assert sum(s.day_column(sec, ws)) == total
    assert s.codes() == sorted(set(s.codes()))
    assert s.off[S_AGE] - s.off[S_CODES] == s.A
    assert s.off[S_RUN] - s.off[S_CAT] == s.C * (s.w[W_CKEY] + s.w[W_CCOUNT])
    assert s.off[S_ITEM] - s.off[S_RUN] == s.R * RUN_BYTES
    assert s.off[S_HASH] - s.off[S_ITEM] == s.I * s.w[W_ITEM]
    assert s.off[-1] - s.off[S_HASH] == s.E * HASH_BYTES


def same_value(a, b, where: str) -> None:
    assert type(a) is type(b), (where, a, b)
    if isinstance(a, dict):
        assert list(a) == list(b), (where, list(a), list(b))
        for k in a:
            same_value(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), (where, a, b)
        for i, (x, y) in enumerate(zip(a, b)):
            same_value(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def same_profile(p: Profile, r: Profile) -> None:
    assert p == r, (p, r)
    for name in ("user_id", "as_of", "features", "interest_tags", "behavior_preferences",
                 "activity_level", "user_type", "confidence", "metrics"):
        same_value(getattr(p, name), getattr(r, name), name)
    assert p.digest() == r.digest()
    assert orjson.dumps(p.to_record(3, "event", 1.5)) == orjson.dumps(r.to_record(3, "event", 1.5))


# ---------------------------------------------------------------- apply


@settings(max_examples=150 * SCALE, **SETTINGS)
@given(st.data())
def test_apply_equals_reference(data):
    world = data.draw(worlds())
    events = data.draw(event_lists(world, 60))
    tz = world.engine.tz
    ref, col = UserState(), ColumnarState.new()
    for ev in events:
        cats = categories_of(world, ev)
        if data.draw(st.booleans()):
            col = decode(encode(col), tz)            # the stream's table between batches
        h = None if ev.event_id is None else event_id_hash(ev.event_id)
        assert capply.check(col, day_of(ev.ts, tz), h, world.engine.rules) == \
            check(ref, day_of(ev.ts, tz), h, world.engine.rules)
        assert capply.apply(col, ev, cats, world.engine.rules) == \
            apply(ref, ev, cats, world.engine.rules)
        check_layout(col)
        assert to_reference(col, tz) == ref
    blob = encode(col)
    assert encode(decode(blob, tz)) == blob
    assert to_reference(decode(blob, tz), tz) == ref
    assert to_reference(from_reference(ref, tz), tz) == ref
    assert has_data(blob) == bool(ref.days)


def test_apply_covers_every_outcome():
    """The event strategy reaches each outcome and each in-place edit (not only appends)."""
    rules = StateRules(0, 3600)
    s, ref = ColumnarState.new(), UserState()
    outcomes = []
    seq = [(D0 + 10, 1, "a"), (D0 + 10, 1, "a"), (D0 + 5000, 2, "b"), (D0 + 100, 2, "c"),
           (D0 + 3 * DAY, 1, "d"), (D0 + 40, 300, "e"), (D0 - 40 * DAY, 1, "f"),
           (D0 + 40 * DAY, 1, "g"), (D0 + 40 * DAY - 10, 2 ** 40, "a"), (D0 + 20, 1, None)]
    for t, item, eid in seq:
        ev = Event(1, item, t, 1, 500, eid)
        outcomes.append(capply.apply(s, ev, (1, 2), rules))
        apply(ref, ev, (1, 2), rules)
        check_layout(s)
        assert to_reference(s, 0) == ref
    # "a" is applied again once its day has left the window
    assert outcomes == ["applied", "duplicate", "applied", "applied", "applied", "applied",
                        "too_late", "applied", "applied", "too_late"]


def test_counters_widen_and_stay_exact():
    """A day with more than 255 events, dwell sums past 2^32 ms, 8-byte item ids."""
    rules = StateRules(0, 1)
    s, ref = ColumnarState.new(), UserState()
    for j in range(700):
        ev = Event(1, j * 977 if j % 3 else 2 ** 63 - 1 - j, D0 + 2 * j, j % 2, 86_400_000,
                   f"x{j}")
        cats = (1, 60_000) if j % 2 else (3,)
        assert capply.apply(s, ev, cats, rules) == apply(ref, ev, cats, rules)
    check_layout(s)
    assert to_reference(s, 0) == ref
    assert s.w[W_ITEM] == 8 and s.w[W_NITEM] == 2 and s.w[W_CKEY] == 3
    assert s.w[W_ACT] == 2 and s.w[W_DWELL_MS] == 5 and s.w[W_NID] == 2
    assert to_reference(decode(encode(s), 0), 0) == ref


# ---------------------------------------------------------------- records


@settings(max_examples=60 * SCALE, **SETTINGS)
@given(st.data())
def test_the_reference_writes_and_reads_the_same_records(data):
    world = data.draw(worlds())
    tz = world.engine.tz
    ref = build(world, data.draw(event_lists(world)))
    ref.source_offset, ref.version = data.draw(st.integers(-1, 10 ** 9)), 7
    ref.published_digest, ref.due_day, ref.published_as_of = 2 ** 61 + 3, 20_050, ref.T
    written = encode_ref(ref, tz)
    col = decode(written, tz)
    assert to_reference(col, tz) == ref
    v3 = encode(col)
    assert v3 == written and v3[0] == FORMAT and read_header(v3) == read_header(written)
    assert decode_ref(v3, tz) == ref


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_hold_mark_round_trips(data):
    """published_at and the held flag (format 4's header) survive encode and decode, and
    `hold_mark` reads them without decoding."""
    world = data.draw(worlds())
    tz = world.engine.tz
    col = from_reference(build(world, data.draw(event_lists(world))), tz)
    col.version, col.published_digest, col.closed_day = 3, 2 ** 60 + 1, 19_000
    col.published_at, col.held = data.draw(st.integers(1, 2 ** 62)), data.draw(st.booleans())
    v4 = encode(col)
    assert v4[0] == FORMAT and len(v4) == len(col.buf)
    back = decode(v4, tz)
    assert (back.published_at, back.held) == (col.published_at, col.held)
    assert hold_mark(v4) == (col.held, col.published_at)
    assert to_reference(back, tz) == to_reference(col, tz)


def test_header_read_and_patched_in_place():
    rules = StateRules(0, 3600)
    s = ColumnarState.new()
    for j in range(20):
        capply.apply(s, Event(1, j, D0 + 999 * j, 1, None, f"e{j}"), (), rules)
    s.source_offset, s.version, s.published_digest, s.due_day = 5, 2, 77, 20_003
    s.published_as_of = s.T - 5
    s.closed_day = 19_990
    blob = encode(s)
    h = read_header(blob)
    assert (h.T, h.source_offset, h.version, h.published_digest, h.due_day,
            h.published_as_of, h.closed_day) == (s.T, 5, 2, 77, 20_003, s.T - 5, 19_990)
    later = decode(blob, 0)
    later.version, later.published_digest, later.due_day, later.published_as_of = \
        3, 2 ** 62 - 1, -1, s.T
    later.closed_day = day_of(s.T, 0)
    patched = patch_header(blob, later)
    assert patched[HEADER_SIZE:] == blob[HEADER_SIZE:]
    assert patched[CLOSED_DAY_AT:CLOSED_DAY_AT + 4] == day_of(s.T, 0).to_bytes(4, "little")
    back = decode(patched, 0)
    assert (back.version, back.published_digest, back.due_day, back.published_as_of,
            back.closed_day) == (3, 2 ** 62 - 1, -1, s.T, day_of(s.T, 0))
    assert read_header(patched).closed_day == day_of(s.T, 0)
    ref = to_reference(back, 0)
    assert decode_ref(encode_ref(ref, 0), 0) == ref
    assert to_reference(back, 0).days == to_reference(s, 0).days


def test_corrupt_records_are_clear_errors():
    from features.encoding import StateDecodeError
    s = ColumnarState.new()
    capply.apply(s, Event(1, 5, D0, 1, None, "x"), (1,), StateRules(0, 60))
    blob = encode(s)
    with pytest.raises(StateDecodeError, match="corrupt"):
        decode(blob[:-2], 0)
    with pytest.raises(StateDecodeError, match="corrupt"):
        decode(blob[:40], 0)
    with pytest.raises(StateDecodeError, match="unknown state format version 9"):
        decode(b"\x09" + blob[1:], 0)
    for old in (1, 2, 3):                   # never deployed: refused, not misread
        with pytest.raises(StateDecodeError, match=f"unknown state format version {old}"):
            decode(bytes([old]) + blob[1:], 0)
        with pytest.raises(StateDecodeError):
            read_header(bytes([old]) + blob[1:])
    with pytest.raises(StateDecodeError):
        decode(b"", 0)
    # lengths that agree with the header, day groups that do not: refused when stacked
    bad = bytearray(blob)
    bad[s.off[S_NCAT]] += 1
    cfg = parse_config({}, env={})
    engine = FeatureEngine(cfg, MappingIndex({
        "106": list(cfg.interest_tags.categories),
        "107": [r.name for r in cfg.behavior_preferences.rules]}))
    with pytest.raises(StateDecodeError, match="do not add up"):
        evaluate_many(engine, [1], [bytes(bad)])


# ---------------------------------------------------------------- evaluation


@settings(max_examples=150 * SCALE, **SETTINGS)
@given(st.data())
def test_evaluate_many_equals_reference(data):
    world = data.draw(worlds())
    engine, tz = world.engine, world.engine.tz
    n = data.draw(st.integers(1, 6))
    refs = [build(world, data.draw(event_lists(world))) for _ in range(n)]
    later = [data.draw(st.sampled_from([0, 0, 1, 3600, DAY, 6 * DAY + 5, 29 * DAY, 45 * DAY]))
             for _ in refs]
    as_of = [max(r.T, D0) + x for r, x in zip(refs, later)]
    # decoded states, records, and a record the reference wrote side by side in one call
    inputs = [from_reference(r, tz) for r in refs]
    if n > 1:
        inputs[1] = encode(inputs[1])
    if n > 2:
        inputs[2] = encode_ref(refs[2], tz)
    uids = list(range(100, 100 + n))
    got = evaluate_many(engine, uids, inputs, as_of)
    for uid, p, r, T in zip(uids, got, refs, as_of):
        same_profile(p, engine.evaluate(uid, r, T))
    # the scores before rounding, bit for bit (rounding would hide a different sum order)
    it = engine.cfg.interest_tags
    configured = {k for _, k, _ in engine.categories}
    for tot, r, T in zip(category_totals_many(engine, inputs, as_of), refs, as_of):
        want = category_totals(r, T, it.window_days, tz, it.decay_factor, engine.weights)
        assert tot == {k: v for k, v in want.items() if k in configured}
    lean = evaluate_many(engine, uids, inputs, as_of, with_metrics=False)
    for p, r in zip(lean, got):
        assert p == r and p.digest() == r.digest()
        assert p.metrics == ({} if not engine.extensions else r.metrics)
    # scheduled runs: only changed users get a profile (one user's digest is the published one)
    states = [decode(x, tz) if isinstance(x, bytes) else x for x in inputs]
    states[0].published_digest = got[0].digest()
    changed = changed_profiles(engine, uids, states, as_of)
    assert changed[0] is None
    for p, r in zip(changed[1:], got[1:]):
        assert p == r
    nonempty = [(u, c, r) for u, c, r in zip(uids, inputs, refs) if not r.empty]
    if nonempty:     # at each state's own T
        got = evaluate_many(engine, [u for u, _, _ in nonempty], [c for _, c, _ in nonempty])
        for p, (u, _, r) in zip(got, nonempty):
            same_profile(p, engine.evaluate(u, r))


@settings(max_examples=50 * SCALE, **SETTINGS)
@given(st.data())
def test_metrics_many_equals_reference(data):
    world = data.draw(worlds())
    engine = world.engine
    refs = [build(world, data.draw(event_lists(world))) for _ in range(data.draw(
        st.integers(1, 4)))]
    as_of = [max(r.T, 0) + data.draw(st.sampled_from([0, 100, DAY, 10 * DAY])) for r in refs]
    windows = engine.cfg.behavior_preferences.time_windows
    got = metrics_many(engine, [from_reference(r, engine.tz) for r in refs], as_of, windows)
    for m, r, T in zip(got, refs, as_of):
        same_value(m, engine.metrics_all(r, T, windows), "metrics")


@settings(max_examples=60 * SCALE, **SETTINGS)
@given(st.data())
def test_category_scores_bit_for_bit(data):
    """Dense (day, category, action) counts, weights and decays whose products round: the
    scores must be the reference's floats exactly (same products, same order of additions)."""
    decay = data.draw(st.sampled_from([0.95, 1 / 3, 0.999, 0.7, 0.1]))
    weights = {0: data.draw(st.sampled_from([0.1, 3.0, 1e16, 0.3])),
               1: data.draw(st.sampled_from([1.0, 0.7, 1 / 3])), 2: 1e-3}
    cfg = parse_config({"interest_tags": {"categories": {"x": [1], "y": [2], "z": [3]},
                                          "decay_factor": decay, "action_weights": weights}},
                       env={})
    engine = FeatureEngine(cfg, MappingIndex({"106": ["z", "old", "x", "y"], "107": [
        r.name for r in cfg.behavior_preferences.rules]}))
    refs = []
    for _ in range(data.draw(st.integers(1, 4))):
        T = D0 + data.draw(st.integers(0, DAY - 1))
        s = UserState(T=T)
        for d in data.draw(st.sets(st.integers(D0 // DAY - 29, D0 // DAY), max_size=12)):
            cats = data.draw(st.dictionaries(
                st.tuples(st.integers(1, 4), st.integers(0, 2)), st.integers(1, 1000),
                max_size=8))
            s.days[d] = DayBucket({0: 1}, 0, 0, cats, [[d * DAY, d * DAY]])
        refs.append(s)
    as_of = [r.T + data.draw(st.sampled_from([0, DAY, 5 * DAY])) for r in refs]
    it = cfg.interest_tags
    got = category_totals_many(engine, [from_reference(r, 0) for r in refs], as_of)
    for tot, r, T in zip(got, refs, as_of):
        want = category_totals(r, T, it.window_days, 0, decay, engine.weights)
        assert tot == {k: v for k, v in want.items() if k != 2}


def test_score_ties_and_rounding_follow_the_reference(tmp_path):
    """Scores equal to 6 decimals tie (then config order decides); a category whose entries
    sum differently in another order would show here (weights 1e16 and 1)."""
    cfg = parse_config({"interest_tags": {
        "categories": {"x": [1], "y": [2], "z": [3]}, "min_frequency": 1, "max_tags": 3,
        "decay_factor": 0.9999999, "action_weights": {0: 1e16, 1: 1.0, 2: 1.0}}}, env={})
    engine = FeatureEngine(cfg, MappingIndex({"106": ["z", "y", "x"], "107": [
        r.name for r in cfg.behavior_preferences.rules]}))
    rules = engine.rules
    states = []
    for plan in ([(1, 1), (2, 1), (1, 0)], [(2, 1), (1, 1)], [(3, 2), (3, 1), (2, 0), (1, 0)]):
        s = UserState()
        for j, (k, a) in enumerate(plan):
            apply(s, Event(1, j, D0 + 86400 * j + 7, a, None, None), (k,), rules)
        states.append(s)
    got = evaluate_many(engine, [1, 2, 3], [from_reference(s, 0) for s in states])
    for uid, p, s in zip([1, 2, 3], got, states):
        same_profile(p, engine.evaluate(uid, s))


def test_sample_users_evaluated_together(tmp_path):
    """Realistic users (tools.data.sample), all evaluated in one call and with apply_events."""
    from tools.data.sample import SampleSpec, write_sample
    info = write_sample(SampleSpec(users=40, days=33, items=400, seed=3), tmp_path)
    cfg = parse_config({"mapping_index": str(tmp_path / "idx.json"),
                        "interest_tags": {"categories": {
                            "entertainment": [100, 101, 102], "technology": [111, 112, 113],
                            "sports": [120, 121], "food": {"140": [1, 2, 3, 4]}}}}, env={})
    rt = FeatureRuntime.from_config(cfg, tmp_path / "item_feat_dict.json")
    parser = EventParser(cfg.events)
    refs: dict[int, UserState] = {}
    cols: dict[int, ColumnarState] = {}
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    for b in range(0, len(lines), 150):              # batches of the log, as the stream takes
        by_user: dict[int, list] = {}
        for off, line in enumerate(lines[b:b + 150], b):
            ev = parse_line(parser, line, 2e9)
            if isinstance(ev, Event):
                by_user.setdefault(ev.user_id, []).append((off, ev))
        ups_c = [apply_events(rt, u, cols.setdefault(u, ColumnarState.new()), evs)
                 for u, evs in by_user.items()]
        finish(rt.engine, ups_c, cfg.behavior_preferences.time_windows)
        for up_c, (u, evs) in zip(ups_c, by_user.items()):
            up_r = apply_events_ref(rt, u, refs.setdefault(u, UserState()), evs)
            assert (up_c.applied, up_c.duplicates, up_c.too_late) == \
                (up_r.applied, up_r.duplicates, up_r.too_late)
            same_value(up_c.closed_days, up_r.closed_days, "closed_days")
            if up_r.profile is None:
                assert up_c.profile is None
            else:
                same_profile(up_c.profile, up_r.profile)
    assert info["events"] > 1000 and len(refs) > 30
    uids = sorted(refs)
    got = evaluate_many(rt.engine, uids, [cols[u] for u in uids])
    for u, p in zip(uids, got):
        assert to_reference(cols[u], rt.engine.tz) == refs[u]
        same_profile(p, rt.engine.evaluate(u, refs[u]))


# ---------------------------------------------------------------- a batch's updates


@settings(max_examples=80 * SCALE, **SETTINGS)
@given(st.data())
def test_apply_events_and_finish_equal_update_apply_events(data):
    world = data.draw(worlds())
    cfg, engine = world.cfg, world.engine
    catalog = ItemCatalog(CategoryMatcher(cfg, engine.index))
    for j, item in enumerate(ITEMS):
        if j % 4:
            catalog.put(item, {str(100 + (j % 5)): 1, "101": 2})
    rt = FeatureRuntime(cfg, engine, catalog, EventParser(cfg.events))
    users = data.draw(st.integers(1, 4))
    refs = {u: UserState() for u in range(users)}
    cols = {u: ColumnarState.new() for u in range(users)}
    offsets = {u: 0 for u in range(users)}
    for _ in range(data.draw(st.integers(1, 4))):          # batches
        batch_r, batch_c = [], []
        for u in range(users):
            evs = data.draw(event_lists(world, 6))
            pairs = []
            for ev in evs:
                # offsets grow, but some are sent again (redelivered)
                offsets[u] += data.draw(st.sampled_from([1, 1, 1, 0, -1]))
                pairs.append((offsets[u], ev))
            pairs.sort(key=lambda p: p[0])
            batch_r.append(apply_events_ref(rt, u, refs[u], pairs))
            batch_c.append(apply_events(rt, u, cols[u], pairs))
        finish(engine, batch_c, cfg.behavior_preferences.time_windows)
        for u in range(users):
            # a scheduled run closed the user's last day (stream time passed it): the next
            # event of a later day must not publish that day again
            if data.draw(st.integers(0, 3)) == 0 and refs[u].days:
                refs[u].closed_day = cols[u].closed_day = day_of(refs[u].T, engine.tz)
        for r, c in zip(batch_r, batch_c):
            assert (c.applied, c.duplicates, c.redelivered, c.too_late, c.touched) == \
                (r.applied, r.duplicates, r.redelivered, r.too_late, r.touched)
            same_value(c.closed_days, r.closed_days, "closed_days")
            assert (c.profile is None) == (r.profile is None)
            if r.profile is not None:
                same_profile(c.profile, r.profile)
                assert c.changed == r.changed
            assert to_reference(c.state, engine.tz) == r.state
        for u in range(users):               # through the table between batches
            cols[u] = decode(encode(cols[u]), engine.tz)


def test_extension_features_use_the_reference_state(tmp_path):
    cfg = parse_config({"extra_features": {"111": {"extractor": "dominant_action"}}}, env={})
    engine = FeatureEngine(cfg, MappingIndex({
        "106": list(cfg.interest_tags.categories),
        "107": [r.name for r in cfg.behavior_preferences.rules]}))
    s = UserState()
    for j in range(9):
        apply(s, Event(1, j, D0 + 50 * j, j % 2, None, None), (1,), engine.rules)
    [p] = evaluate_many(engine, [5], [from_reference(s, 0)])
    same_profile(p, engine.evaluate(5, s))
    assert p.features["111"] == [1110000001]


# ---------------------------------------------------------------- scheduled runs


@settings(max_examples=50 * SCALE, **SETTINGS)
@given(st.data())
def test_schedule_helpers_equal_reference(data):
    world = data.draw(worlds())
    engine, tz = world.engine, world.engine.tz
    refs = [build(world, data.draw(event_lists(world))) for _ in range(data.draw(
        st.integers(1, 4)))]
    cols = [from_reference(r, tz) for r in refs]
    for r in refs:          # the last day open, closed by a run, or an earlier day closed
        r.closed_day = day_of(max(r.T, 0), tz) - data.draw(st.sampled_from([0, 1, 3, 40]))
    cols = [from_reference(r, tz) for r in refs]
    eval_days = [day_of(max(r.T, 0), tz) + data.draw(st.sampled_from([0, 1, 6, 7, 29, 31]))
                 for r in refs]
    want = [schedule.next_change_day(r, d, engine.windows) for r, d in zip(refs, eval_days)]
    assert cschedule.next_change_days(cols, eval_days, engine.windows, tz) == want
    assert [cschedule.next_change_day(c, d, engine.windows, tz)
            for c, d in zip(cols, eval_days)] == want
    assert [cschedule.open_day(c, tz) for c in cols] == [schedule.open_day(r) for r in refs]
    for r, c, d in zip(refs, cols, eval_days):
        as_of = d * DAY + 5 - tz
        assert cschedule.is_idle(c, as_of, tz) == schedule.is_idle(r, as_of, tz)
        r.version, r.published_digest, r.published_as_of = 3, 99, r.T
        c.version, c.published_digest, c.published_as_of = 3, 99, c.T
        retired = cschedule.retire(c)
        assert to_reference(retired, tz) == schedule.retire(r)
        assert not has_data(encode(retired))
        assert cschedule.window_view(c, max(as_of, r.T), tz) == \
            drift.window_view(r, max(as_of, r.T), tz)
        assert cschedule.state_summary(c, tz) == {
            "T": r.T, "source_offset": r.source_offset, "version": r.version,
            "events": sum(b.total for b in r.days.values()),
            "days": {str(dd): b.total for dd, b in sorted(r.days.items())},
            "event_ids": len(r.event_ids)}


def test_too_late_outcome_reaches_apply_events():
    cfg = parse_config({}, env={})
    engine = FeatureEngine(cfg, MappingIndex({
        "106": list(cfg.interest_tags.categories),
        "107": [r.name for r in cfg.behavior_preferences.rules]}))
    rt = FeatureRuntime(cfg, engine, ItemCatalog(CategoryMatcher(cfg, engine.index)),
                        EventParser(cfg.events))
    late = Event(1, 1, D0 - 30 * DAY, 1, None, None)
    up = apply_events(rt, 1, ColumnarState.new(),
                      [(1, Event(1, 1, D0, 1, None, "a")), (2, late),
                       (2, Event(1, 2, D0 + 1, 1, None, "b")),
                       (3, Event(1, 2, D0 + DAY, 1, None, "c"))])
    finish(engine, [up], cfg.behavior_preferences.time_windows)
    assert (up.applied, up.redelivered, up.too_late, up.duplicates) == (2, 1, [(2, late)], 0)
    assert [d for d, _ in up.closed_days] == [D0 // DAY]
    assert up.profile is not None and up.changed
