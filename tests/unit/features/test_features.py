"""Every rule of FEATURES.md, with expectations computed by hand (no broker)."""
from __future__ import annotations

import math

import orjson
import pytest

from features import mapping_index
from features.catalog import CategoryMatcher, ItemCatalog
from features.config import parse_config
from features.events import Event, EventParser, Rejection, day_of
from features.profile import FeatureEngine
from features.state import APPLIED, DUPLICATE, TOO_LATE, UserState, apply

DAY = 86400
D0 = 20000 * DAY          # midnight UTC of day 20000 (2024-10-04)


def make(tmp_path, **sections):
    cfg = parse_config({"mapping_index": str(tmp_path / "idx.json"), **sections},
                       base_dir=tmp_path, env={})
    index = mapping_index.sync(cfg)
    engine = FeatureEngine(cfg, index)
    catalog = ItemCatalog(CategoryMatcher(cfg, index))
    return cfg, engine, catalog


def ev(ts, item=1, action=1, dwell=None, eid=None, user=1):
    return Event(user, item, ts, action, None if dwell is None else round(dwell * 1000), eid)


def run(engine, catalog, events, state=None):
    state = state or UserState()
    outcomes = [apply(state, e, catalog.categories(e.item_id), engine.rules) for e in events]
    return state, outcomes


# ---------------------------------------------------------------- time and windows

def test_window_edges_day_w_minus_1_in_day_w_out(tmp_path):
    _, engine, catalog = make(tmp_path)
    T = D0 + 10 * DAY + 5
    st, _ = run(engine, catalog, [ev(D0 + 3 * DAY + 100), ev(D0 + 4 * DAY), ev(T)])
    m7 = engine.metrics(st, T, 7)          # days 4..10: day 4 is day(T)-6 (in), day 3 out
    assert m7["actions"] == 2 and m7["active_days"] == 2
    assert engine.metrics(st, T, 1)["actions"] == 1
    assert engine.metrics(st, T, 30)["actions"] == 3


def test_tz_offset_moves_day_boundaries(tmp_path):
    assert day_of(D0 + 23 * 3600, 0) == 20000
    assert day_of(D0 + 23 * 3600, 8 * 3600) == 20001
    _, engine, catalog = make(tmp_path, events={"tz_offset_hours": 8})
    # 17:00 UTC is 01:00 the next day at +8: both events fall on day 20001, one active day
    st, _ = run(engine, catalog, [ev(D0 + 17 * 3600), ev(D0 + DAY + 10 * 3600)])
    m = engine.metrics(st, st.T, 1)
    assert m["actions"] == 2 and m["active_days"] == 1
    _, engine0, _ = make(tmp_path / "z")
    st0, _ = run(engine0, catalog, [ev(D0 + 17 * 3600), ev(D0 + DAY + 10 * 3600)])
    assert engine0.metrics(st0, st0.T, 1)["actions"] == 1


def test_as_of_later_than_t_slides_windows(tmp_path):
    _, engine, catalog = make(tmp_path)
    st, _ = run(engine, catalog, [ev(D0 + i * 60) for i in range(40)])
    assert engine.evaluate(1, st).activity_level == 2              # 40/7 = 5.7: > 0, > 5
    # seven days later the events have left the 7-day window: level 0
    assert engine.evaluate(1, st, D0 + 7 * DAY).features["108"] == [1080000000]
    with pytest.raises(ValueError):
        engine.evaluate(1, st, st.T - 1)


# ---------------------------------------------------------------- metrics (§3)

def test_each_window_metric(tmp_path):
    _, engine, catalog = make(tmp_path)
    events = [ev(D0 + 100, item=1, action=0),
              ev(D0 + 200, item=2, action=1, dwell=30),
              ev(D0 + 5000, item=2, action=1, dwell=90.5),     # gap 4800 > 3600: new session
              ev(D0 + DAY + 50, item=3, action=2)]
    st, _ = run(engine, catalog, events)
    m = engine.metrics(st, st.T, 7)
    assert m["actions"] == 4
    assert m["active_days"] == 2
    assert m["actions_per_active_day"] == 2.0
    assert m["unique_items"] == 3
    assert m["unique_item_ratio"] == 0.75
    assert m["avg_dwell_time"] == (30 + 90.5) / 2
    assert (m["rate_exposure"], m["rate_click"], m["rate_conversion"]) == (0.25, 0.5, 0.25)
    assert m["sessions"] == 3                      # [100,200], [5000], [DAY+50]
    assert m["avg_session_duration"] == 100 / 3
    empty = engine.metrics(UserState(), D0, 7)
    assert empty["sessions"] == 0 and empty["avg_session_duration"] == 0.0
    assert empty["avg_dwell_time"] == 0.0 and empty["unique_item_ratio"] == 0.0


def test_sessions_across_midnight(tmp_path):
    _, engine, catalog = make(tmp_path)
    st, _ = run(engine, catalog, [ev(D0 + DAY - 1800), ev(D0 + DAY + 600), ev(D0 + DAY + 700)])
    m = engine.metrics(st, st.T, 7)
    assert m["sessions"] == 1 and m["avg_session_duration"] == 2500
    # but the 1-day window starts at midnight: only the two events after it
    m1 = engine.metrics(st, st.T, 1)
    assert m1["sessions"] == 1 and m1["avg_session_duration"] == 100


def test_session_gap_is_strictly_greater(tmp_path):
    _, engine, catalog = make(tmp_path)
    st, _ = run(engine, catalog, [ev(D0), ev(D0 + 3600), ev(D0 + 7201)])
    assert engine.metrics(st, st.T, 1)["sessions"] == 2    # gap 3600 joins, 3601 splits


# ---------------------------------------------------------------- 106

CATS = {"a": [100], "b": [200], "c": {300: [1, 2]}}


def _catalog_items(catalog):
    catalog.put(1, {"100": 1})
    catalog.put(2, {"200": 5})
    catalog.put(3, {"300": 2})
    catalog.put(4, {"300": 9})              # value not accepted: no category
    catalog.put(5, {"300": [9, 1]})         # list-valued: any element
    catalog.put(6, {"100": 1, "200": 1})    # two categories


def test_category_rules_both_forms(tmp_path):
    _, _, catalog = make(tmp_path, interest_tags={"categories": CATS})
    _catalog_items(catalog)
    assert [catalog.categories(i) for i in (1, 2, 3, 4, 5, 6, 99)] == \
        [(1,), (2,), (3,), (), (3,), (1, 2), ()]


def test_interest_score_decay_ties_and_min_frequency(tmp_path):
    _, engine, catalog = make(tmp_path, interest_tags={"categories": CATS, "min_frequency": 3})
    _catalog_items(catalog)
    T = D0 + 2 * DAY
    # a: 3 events today (score 3); b: 3 events today (3, tie -> config order a, b);
    # c: 3 events yesterday (2.85); item 4 counts for nothing
    events = [ev(T - i, item=1) for i in range(3)] + [ev(T - 10 - i, item=2) for i in range(3)] \
        + [ev(T - DAY - i, item=3) for i in range(3)] + [ev(T - 50, item=4)]
    st, _ = run(engine, catalog, events)
    p = engine.evaluate(1, st)
    assert p.interest_tags == ["a", "b", "c"]
    assert p.features["106"] == [1060000001, 1060000002, 1060000003]
    # c with only 2 events is below min_frequency
    st2, _ = run(engine, catalog, events[:6] + events[6:8])
    assert engine.evaluate(1, st2).interest_tags == ["a", "b"]
    # c today with 4 events outranks
    st3, _ = run(engine, catalog, events[:6] + [ev(T - 100 - i, item=3) for i in range(4)])
    assert engine.evaluate(1, st3).interest_tags == ["c", "a", "b"]


def test_interest_weights_and_max_tags_and_default(tmp_path):
    _, engine, catalog = make(tmp_path, interest_tags={
        "categories": CATS, "min_frequency": 1, "max_tags": 1,
        "action_weights": {0: 0.5, 2: 4.0}})
    _catalog_items(catalog)
    T = D0
    st, _ = run(engine, catalog, [ev(T, item=1, action=0), ev(T, item=1, action=0),
                                  ev(T, item=2, action=2)])
    p = engine.evaluate(1, st)          # a: 1.0, b: 4.0
    assert p.interest_tags == ["b"] and p.features["106"] == [1060000002]
    st0, _ = run(engine, catalog, [ev(T, item=99)])
    assert engine.evaluate(1, st0).features["106"] == [1060000000]


# ---------------------------------------------------------------- 107

@pytest.mark.parametrize("op,threshold,holds", [
    (">", 2.0, False), (">=", 2.0, True), ("<", 2.0, False), ("<=", 2.0, True),
    (">", 1.9, True), ("<", 2.1, True)])
def test_rule_ops(tmp_path, op, threshold, holds):
    rules = [{"name": "r", "metric": "actions", "window_days": 1, "op": op,
              "threshold": threshold}]
    _, engine, catalog = make(tmp_path, behavior_preferences={"rules": rules})
    st, _ = run(engine, catalog, [ev(D0), ev(D0 + 1)])
    assert engine.evaluate(1, st).features["107"] == ([1070000001] if holds else [1070000000])


def test_rule_min_actions_order_and_max(tmp_path):
    rules = [{"name": "ratio", "metric": "unique_item_ratio", "window_days": 30, "op": ">",
              "threshold": 0.7, "min_actions": 5},
             {"name": "clicks", "metric": "rate_click", "window_days": 7, "op": ">=",
              "threshold": 0.5},
             {"name": "few", "metric": "actions", "window_days": 7, "op": "<", "threshold": 10}]
    _, engine, catalog = make(tmp_path, behavior_preferences={"rules": rules,
                                                              "max_preferences": 2})
    four = [ev(D0 + i, item=i) for i in range(4)]
    st, _ = run(engine, catalog, four)       # ratio 1.0 but only 4 actions
    p = engine.evaluate(1, st)
    assert p.behavior_preferences == ["clicks", "few"]
    st5, _ = run(engine, catalog, four + [ev(D0 + 9, item=9)])
    p5 = engine.evaluate(1, st5)             # all three hold, max_preferences 2
    assert p5.behavior_preferences == ["ratio", "clicks"]
    assert p5.features["107"] == [1070000001, 1070000002]


# ---------------------------------------------------------------- 108 / 110 / confidence

@pytest.mark.parametrize("combine,level", [("actions", 2), ("min", 1), ("max", 2),
                                           ("mean_floor", 1)])
def test_activity_level_combine_modes(tmp_path, combine, level):
    _, engine, catalog = make(tmp_path, activity_levels={"combine": combine})
    # 42 events in 7 days -> 6/day: level_a 2 (> 0, > 5). One session of 200 s -> level_s 1.
    st, _ = run(engine, catalog, [ev(D0 + i * 5) for i in range(41)] + [ev(D0 + 200)])
    m = engine.metrics(st, st.T, 7)
    assert m["actions"] == 42 and m["sessions"] == 1 and m["avg_session_duration"] == 200
    assert engine.evaluate(1, st).features["108"] == [1080000000 + level]


def test_activity_level_capped_at_levels_minus_one(tmp_path):
    _, engine, catalog = make(tmp_path, activity_levels={"levels": 2})
    st, _ = run(engine, catalog, [ev(D0 + i) for i in range(300)])
    assert engine.evaluate(1, st).activity_level == 1


def test_user_type_and_confidence(tmp_path):
    _, engine, catalog = make(tmp_path)
    # 5 sessions (gaps of 2 h), 4 events each = 20 actions -> type 1
    events = [ev(D0 + s * 7200 + i) for s in range(5) for i in range(4)]
    st, _ = run(engine, catalog, events)
    p = engine.evaluate(1, st)
    assert p.user_type == 1 and p.features["110"] == [1100000001]
    assert p.confidence == round(1 - math.exp(-1), 4) == 0.6321
    st19, _ = run(engine, catalog, events[:19])
    assert engine.evaluate(1, st19).user_type == 0


# ---------------------------------------------------------------- order, lateness, duplicates

def test_out_of_order_events_give_the_same_state(tmp_path):
    _, engine, catalog = make(tmp_path)
    events = [ev(D0 + 10), ev(D0 + DAY + 5000, dwell=3), ev(D0 + 4000, item=2), ev(D0 + 2 * DAY)]
    a, _ = run(engine, catalog, events)
    b, _ = run(engine, catalog, list(reversed(events)))
    assert a == b
    assert a.T == D0 + 2 * DAY                # an older event never moves T back


def test_too_late_is_judged_against_the_users_current_T(tmp_path):
    _, engine, catalog = make(tmp_path)
    T = D0 + 40 * DAY
    st, out = run(engine, catalog, [ev(T), ev(D0 + 11 * DAY), ev(D0 + 10 * DAY + DAY - 1)])
    assert out == [APPLIED, APPLIED, TOO_LATE]   # day 11 = day(T) - 29 is in, day 10 is out
    assert engine.metrics(st, T, 30)["actions"] == 2


def test_duplicate_event_ids(tmp_path):
    _, engine, catalog = make(tmp_path)
    st, out = run(engine, catalog, [ev(D0, eid="x"), ev(D0 + 5, eid="x"), ev(D0 + 6, eid="y")])
    assert out == [APPLIED, DUPLICATE, APPLIED]
    assert engine.metrics(st, st.T, 1)["actions"] == 2
    # once the first "x" has left the 30-day window, "x" is new again
    later = D0 + 31 * DAY
    _, out2 = run(engine, catalog, [ev(later), ev(later + 1, eid="x")], st)
    assert out2 == [APPLIED, APPLIED]
    # a re-sent event that is also too late counts as too_late
    _, out3 = run(engine, catalog, [ev(D0 + 7, eid="y")], st)
    assert out3 == [TOO_LATE]


# ---------------------------------------------------------------- input validation (§1.1, §6)

@pytest.fixture
def parser():
    cfg = parse_config({}, env={})
    return EventParser(cfg.events, clock=lambda: 1_700_000_000)


def body(**kw):
    base = {"user_id": 7, "item_id": 9, "timestamp": 1_690_000_000, "action_type": 1}
    base.update(kw)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


@pytest.mark.parametrize("raw,key,reason", [
    (b"{nope", None, "malformed_json"),
    (b"[1]", None, "not_an_object"),
    (body(pad="x" * 70000), b"7", "too_large"),
    (body(item_id=...), b"7", "missing_field"),
    (body(action_type=...), b"7", "missing_field"),
    (body(action_type=None), b"7", "missing_field"),        # null is missing (was accepted)
    (body(action_type=None, event_type=None), b"7", "missing_field"),
    (body(user_id="7"), b"7", "bad_type"),
    (body(user_id=True), b"7", "bad_type"),
    (body(timestamp="1"), b"7", "bad_type"),
    (body(dwell_time="3"), b"7", "bad_type"),
    (body(user_id=2 ** 63), b"7", "out_of_range"),
    (body(timestamp=-1), b"7", "out_of_range"),
    (body(dwell_time=86401), b"7", "out_of_range"),
    (body(event_id="e" * 129), b"7", "out_of_range"),
    (body(action_type=5), b"7", "unknown_action"),
    (body(action_type=5), None, "unknown_action"),          # unknown_action before missing_key
    (body(action_type=..., event_type="teleport"), b"7", "unknown_action"),
    (body(action_type=2, event_type="click"), b"7", "unknown_action"),
    (body(), None, "missing_key"),
    (body(timestamp=1_700_000_301), None, "missing_key"),   # missing_key before future_timestamp
    (body(), b"8", "key_mismatch"),
    (body(), b"", "key_mismatch"),
    (body(timestamp=1_700_000_301), b"7", "future_timestamp"),
])
def test_rejections(parser, raw, key, reason):
    r = parser.parse_message(raw, key)
    assert isinstance(r, Rejection) and r.reason == reason, r


def test_lines_have_no_key_to_check(parser):
    """The batch path's lines: the same checks but the key's, in the same order."""
    assert parser.parse_line(body()) == parser.parse_message(body(), b"7")
    assert parser.check_line(orjson.loads(body())) == parser.parse_message(body(), "7")
    assert parser.parse_line(body(timestamp=1_700_000_301)).reason == "future_timestamp"
    assert parser.parse_line(body(action_type=5)).reason == "unknown_action"


def test_accepted_forms(parser):
    e = parser.parse_message(body(timestamp=1_690_000_000_999, action_type=...,
                                  event_type="click", dwell_time=1.2345, event_id="a"), b"7")
    assert e == Event(7, 9, 1_690_000_000, 1, 1234, "a")     # ms floored, dwell in ms
    assert parser.parse_line(body(timestamp=1_690_000_000.9)).ts == 1_690_000_000
    assert parser.parse_line(body(action_type=None, event_type="click")).action == 1
    assert parser.parse_line(body(timestamp=1_700_000_300)).ts == 1_700_000_300  # skew edge
    assert parser.parse_line(body(extra={"x": 1})).user_id == 7                  # extras ignored


def test_timestamp_units():
    sec = EventParser(parse_config({"events": {"timestamp_unit": "s"}}, env={}).events,
                      clock=lambda: 2e12)
    assert sec.parse_line(body(timestamp=1_600_000_000_000)).reason == "out_of_range"
    ms = EventParser(parse_config({"events": {"timestamp_unit": "ms"}}, env={}).events,
                     clock=lambda: 2e12)
    assert ms.parse_line(body(timestamp=1_600_000_000)).ts == 1_600_000


# ---------------------------------------------------------------- mapping index (§5)

def test_mapping_index_is_append_only_across_config_changes(tmp_path):
    path = tmp_path / "idx.json"
    cfg1 = parse_config({"mapping_index": str(path),
                         "interest_tags": {"categories": {"a": [1], "b": [2]}}}, env={})
    assert mapping_index.sync(cfg1).ids("106") == {"a": 1, "b": 2}
    cfg2 = parse_config({"mapping_index": str(path),
                         "interest_tags": {"categories": {"c": [3], "b": [2]}}}, env={})
    idx = mapping_index.sync(cfg2)        # a removed (kept reserved), c new
    assert idx.ids("106") == {"a": 1, "b": 2, "c": 3}
    assert mapping_index.load(path).ids("106") == {"a": 1, "b": 2, "c": 3}
    assert idx.ids("107") == {"click_frequency": 1, "interaction_pattern": 2, "dwell_time": 3}
    engine = FeatureEngine(cfg2, idx)
    catalog = ItemCatalog(CategoryMatcher(cfg2, idx))
    catalog.put(1, {"3": 0})
    st, _ = run(engine, catalog, [ev(D0 + i) for i in range(3)])
    assert engine.evaluate(1, st).features["106"] == [1060000003]
    path.write_text("{broken")
    with pytest.raises(mapping_index.MappingIndexError):
        mapping_index.sync(cfg2)
