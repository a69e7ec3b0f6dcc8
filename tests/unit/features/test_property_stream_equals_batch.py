"""Property: for random logs, applying events one by one — encoding and decoding the state between
every event, as the stream's table does — gives exactly the batch path's profile, at the user's T
and at a later T; and both match a brute-force oracle written from FEATURES.md over raw events."""
from __future__ import annotations

import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import mapping_index
from features.catalog import CategoryMatcher, ItemCatalog
from features.config import parse_config
from features.encoding import decode, encode
from features.events import EventParser, Rejection, day_of
from features.profile import FeatureEngine
from features.runtime import FeatureRuntime
from features.state import APPLIED, UserState, apply
from offline.batch_io import BatchReport
from reference.batch import build_states

DAY = 86400
D0 = 20000 * DAY
NOW = D0 + 200 * DAY
CATS = {"a": [100], "b": [200], "c": {300: [1, 2]}}
ITEMS = {1: {"100": 1}, 2: {"200": 1}, 3: {"300": 2}, 4: {"300": 7}, 5: {"100": 1, "200": 3},
         6: {}}


def setup(tmp_path, tz_hours, combine):
    cfg = parse_config({
        "mapping_index": str(tmp_path / "idx.json"),
        "events": {"tz_offset_hours": tz_hours},
        "interest_tags": {"categories": CATS, "min_frequency": 2, "max_tags": 2,
                          "action_weights": {0: 0.5, 1: 1.0, 2: 3.0}},
        "activity_levels": {"combine": combine},
        "user_types": {"criteria": {"type_1": {"min_sessions": 3, "min_actions": 6}}},
    }, env={})
    index = mapping_index.sync(cfg)
    engine = FeatureEngine(cfg, index)
    catalog = ItemCatalog(CategoryMatcher(cfg, index))
    for i, f in ITEMS.items():
        catalog.put(i, f)
    return cfg, engine, catalog


event_st = st.fixed_dictionaries({
    "user_id": st.just(42),
    "item_id": st.integers(1, 7),
    "timestamp": st.integers(D0, D0 + 70 * DAY),
    "action_type": st.integers(0, 2),
}, optional={"dwell_time": st.floats(0, 500, allow_nan=False).map(lambda x: round(x, 3)),
             "event_id": st.sampled_from(["e1", "e2", "e3", "e4"])})


def oracle(cfg, catalog, applied, T):
    """FEATURES.md §3–4 computed from the list of applied events, no state."""
    tz = cfg.events.tz_offset_seconds
    dT = day_of(T, tz)

    def window(W):
        return [e for e in applied if dT - W + 1 <= day_of(e.ts, tz) <= dT and e.ts <= T]

    def metrics(W):
        es = window(W)
        n = len(es)
        ts = sorted(e.ts for e in es)
        sessions, durations, start = 0, [], None
        for i, t in enumerate(ts):
            if i == 0 or t - ts[i - 1] > cfg.events.session_gap_seconds:
                if start is not None:
                    durations.append(ts[i - 1] - start)
                start = t
                sessions += 1
        if start is not None:
            durations.append(ts[-1] - start)
        dw = [e.dwell_ms for e in es if e.dwell_ms is not None]
        return {"actions": n, "sessions": sessions,
                "avg_session_duration": sum(durations) / sessions if sessions else 0.0,
                "unique_items": len({e.item_id for e in es}),
                "active_days": len({day_of(e.ts, tz) for e in es}),
                "avg_dwell_time": sum(dw) / len(dw) / 1000 if dw else 0.0}

    it = cfg.interest_tags
    scored = []
    for pos, name in enumerate(it.categories):
        k = pos + 1
        es = [e for e in window(it.window_days) if k in catalog.categories(e.item_id)]
        score = sum(cfg.action_weight(e.action) * it.decay_factor ** (dT - day_of(e.ts, tz))
                    for e in es)
        if len(es) >= it.min_frequency:
            scored.append((-round(score, 6), pos, name))
    tags = [n for _, _, n in sorted(scored)[:it.max_tags]]
    m7, m30 = metrics(7), metrics(30)
    al = cfg.activity_levels
    la = min(al.levels - 1, sum(m7["actions"] / 7 > t for t in al.metrics.daily_actions))
    ls = min(al.levels - 1, sum(m7["avg_session_duration"] > t
                                for t in al.metrics.session_duration))
    level = {"actions": la, "min": min(la, ls), "max": max(la, ls),
             "mean_floor": (la + ls) // 2}[al.combine]
    t1 = cfg.user_types.criteria.type_1
    utype = int(m30["sessions"] >= t1.min_sessions and m30["actions"] >= t1.min_actions)
    return {"tags": tags, "level": level, "type": utype, "m7": m7, "m30": m30,
            "confidence": round(1 - math.exp(-m30["actions"] / 20), 4)}


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(event_st, max_size=60), tz=st.sampled_from([0, 8, -5.5]),
       combine=st.sampled_from(["actions", "min", "max", "mean_floor"]),
       later_days=st.integers(0, 40))
def test_incremental_with_encoding_equals_batch_and_oracle(tmp_path, events, tz, combine,
                                                           later_days):
    cfg, engine, catalog = setup(tmp_path, tz, combine)
    tzs = cfg.events.tz_offset_seconds
    parser = EventParser(cfg.events, clock=lambda: NOW)
    lines = [orjson.dumps(e) for e in events]

    # the stream's way: one event at a time, state through its binary encoding each time
    blob = encode(UserState(), tzs)
    applied = []
    for line in lines:
        e = parser.parse_message(line, b"42", NOW)
        assert not isinstance(e, Rejection)
        state = decode(blob, tzs)
        if apply(state, e, catalog.categories(e.item_id), engine.rules) == APPLIED:
            applied.append(e)
        blob = encode(state, tzs)
    state = decode(blob, tzs)

    # the batch way
    report = BatchReport()
    batch_states = build_states(FeatureRuntime(cfg, engine, catalog, parser), iter(lines), report,
                                now=NOW)
    if not applied:
        assert not batch_states or batch_states[42].empty
        return
    bstate = batch_states[42]
    assert bstate == state
    for T in (state.T, state.T + later_days * DAY + 17):
        p_stream = engine.evaluate(42, state, T)
        p_batch = engine.evaluate(42, bstate, T)
        assert p_stream == p_batch
        want = oracle(cfg, catalog, applied, T)
        assert p_stream.interest_tags == want["tags"]
        assert p_stream.activity_level == want["level"]
        assert p_stream.user_type == want["type"]
        assert p_stream.confidence == want["confidence"]
        for W, key in ((7, "m7"), (30, "m30")):
            got = p_stream.metrics[W]
            for name, value in want[key].items():
                assert math.isclose(got[name], value, rel_tol=1e-12, abs_tol=1e-12), \
                    (W, name, got[name], value)
