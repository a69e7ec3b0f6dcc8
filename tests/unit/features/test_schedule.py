"""Scheduled-run logic without a broker: when a profile can change, idle users, run times,
the state header the jobs read and patch, drift, and the API token."""
from __future__ import annotations

import os
import stat

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import mapping_index
from features.catalog import CategoryMatcher, ItemCatalog
from features.columnar.layout import HEADER_SIZE
from features.config import ConfigError, parse_config
from features.drift import compare
from features.encoding import decode, encode, patch_header, read_header
from features.events import Event, day_of
from features.profile import FeatureEngine
from features.schedule import (
    NEVER,
    cron_specs,
    feature_fingerprint,
    is_idle,
    next_change_day,
    open_day,
    retire,
)
from features.state import UserState, apply
from streams.web.auth import ENV, api_token, authorized

DAY = 86400
D0 = 20000 * DAY


def engine_and_catalog(tmp_path, **sections):
    cfg = parse_config({"mapping_index": str(tmp_path / "idx.json"),
                        "interest_tags": {"categories": {"a": [100], "b": [200], "c": [300]},
                                          "min_frequency": 2, "max_tags": 2},
                        **sections}, env={})
    index = mapping_index.sync(cfg)
    catalog = ItemCatalog(CategoryMatcher(cfg, index))
    for i, f in {1: {"100": 1}, 2: {"200": 1}, 3: {"300": 1}, 4: {"100": 1, "200": 1}}.items():
        catalog.put(i, f)
    return cfg, FeatureEngine(cfg, index), catalog


def build(engine, catalog, events) -> UserState:
    s = UserState()
    for i, (t, item, action) in enumerate(events):
        apply(s, Event(7, item, t, action, None, f"e{i}"), catalog.categories(item), engine.rules)
    return s


def test_next_change_day_by_hand(tmp_path):
    _, engine, catalog = engine_and_catalog(tmp_path)
    assert engine.windows == [7, 30]       # the windows the default features read
    s = build(engine, catalog, [(D0 + 100, 1, 1), (D0 + 3 * DAY, 2, 1)])
    d0 = day_of(D0, 0)
    # the last day (d0+3) is open: its aggregates are due the day after it, and at once when
    # a run comes later than that
    assert open_day(s) == d0 + 3
    assert next_change_day(s, d0 + 3, engine.windows) == d0 + 4
    assert next_change_day(s, d0 + 5, engine.windows) == d0 + 4
    s.closed_day = d0 + 3
    assert open_day(s) is None
    # day d0 leaves the 7-day window on d0+7, d0+3 on d0+10; the 30-day one on d0+30, d0+33
    assert next_change_day(s, d0 + 3, engine.windows) == d0 + 7
    assert next_change_day(s, d0 + 7, engine.windows) == d0 + 10
    assert next_change_day(s, d0 + 10, engine.windows) == d0 + 30
    assert next_change_day(s, d0 + 30, engine.windows) == d0 + 33
    assert next_change_day(s, d0 + 33, engine.windows) == NEVER
    assert next_change_day(UserState(), d0, engine.windows) == NEVER
    assert open_day(retire(build(engine, catalog, [(D0, 1, 1)]))) is None   # nothing to close


events_st = st.lists(st.tuples(st.integers(D0, D0 + 45 * DAY), st.integers(1, 4),
                               st.integers(0, 2)), min_size=1, max_size=40)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(events=events_st, later=st.integers(0, 40))
def test_profile_cannot_change_before_its_next_change_day(tmp_path, events, later):
    """The hourly job skips a user until next_change_day: the arrays must be the same on every
    day before it, and the same as the batch path's at any later T (evaluate is pure)."""
    _, engine, catalog = engine_and_catalog(tmp_path)
    s = build(engine, catalog, sorted(events))
    eval_day = day_of(s.T, 0) + later
    base = engine.evaluate(7, s, max(s.T, eval_day * DAY)).arrays()
    due = next_change_day(s, eval_day, engine.windows)
    last = due if due != NEVER else eval_day + 62
    for d in range(eval_day, last):
        T = max(s.T, d * DAY + DAY - 1)
        assert engine.evaluate(7, s, T).arrays() == base, (d, due)


def test_idle_and_retire(tmp_path):
    _, engine, catalog = engine_and_catalog(tmp_path)
    s = build(engine, catalog, [(D0 + 100, 1, 1)])
    s.version, s.published_digest, s.source_offset, s.published_as_of = 4, 99, 1234, D0 + 100
    assert not is_idle(s, D0 + 29 * DAY, 0)
    assert is_idle(s, D0 + 30 * DAY, 0)
    r = retire(s)
    assert (r.T, r.version, r.published_digest, r.source_offset, r.published_as_of) == \
        (s.T, 4, 99, 1234, D0 + 100)
    assert not r.days and not r.items and not r.event_ids
    assert len(encode(r, 0)) == HEADER_SIZE     # the record's header alone
    # a retired user's profile is the default one, like the full state's after 30 days
    later = D0 + 31 * DAY
    assert engine.evaluate(7, r, later).arrays() == engine.evaluate(7, s, later).arrays()


def test_cron_specs_and_timezone(tmp_path):
    cfg = parse_config({"scheduled_update": {"daily_deep_update": "02:30",
                                             "weekly_full_update": "sunday:03:05",
                                             "timezone": "Asia/Shanghai"}}, env={})
    assert [(c.job, c.cron) for c in cron_specs(cfg)] == [
        ("hourly", "0 * * * *"), ("daily", "30 2 * * *"), ("weekly", "5 3 * * 0")]
    off = parse_config({"scheduled_update": {"hourly_update": False, "daily_deep_update": None,
                                             "weekly_full_update": None}}, env={})
    assert cron_specs(off) == []
    with pytest.raises(ConfigError, match="scheduled_update.timezone.*unknown time zone"):
        parse_config({"scheduled_update": {"timezone": "Mars/Olympus"}}, env={})
    with pytest.raises(ConfigError, match="scheduled_update.weekly_full_update"):
        parse_config({"scheduled_update": {"weekly_full_update": "someday:03:00"}}, env={})


def test_feature_fingerprint_follows_feature_config_only():
    a = parse_config({}, env={})
    b = parse_config({"worker": {"web_port": 7000}, "kafka": {"partitions": 16}}, env={})
    c = parse_config({"interest_tags": {"min_frequency": 4}}, env={})
    assert feature_fingerprint(a) == feature_fingerprint(b) != feature_fingerprint(c)


def test_header_read_patch_and_older_format(tmp_path):
    _, engine, catalog = engine_and_catalog(tmp_path)
    s = build(engine, catalog, [(D0 + 100, 1, 1), (D0 + DAY, 2, 0)])
    s.source_offset, s.version, s.published_digest, s.due_day, s.published_as_of = \
        77, 3, 12345, 20010, D0 + DAY
    blob = encode(s, 0)
    assert decode(blob, 0) == s
    h = read_header(blob)
    assert (h.T, h.source_offset, h.version, h.published_digest, h.due_day,
            h.published_as_of) == (s.T, 77, 3, 12345, 20010, D0 + DAY)
    s.version, s.published_digest, s.due_day, s.published_as_of = 4, 999, 20011, D0 + 5 * DAY
    assert patch_header(blob, s) == encode(s, 0)
    lite = decode(blob, 0, event_ids=False)
    assert lite.days == s.days and lite.items == s.items and lite.event_ids == {}


def test_drift_compare(tmp_path):
    _, engine, catalog = engine_and_catalog(tmp_path)
    evs = [(D0 + i * 3600, 1 + i % 3, 1) for i in range(30)]
    live, rebuilt = build(engine, catalog, evs), build(engine, catalog, evs)
    T = live.T
    assert compare(engine, 7, live, rebuilt, T) is None
    # the daily job retired a user: not drift
    later = T + 40 * DAY
    assert compare(engine, 7, retire(live), rebuilt, later) is None
    # a corrupted count is
    day = max(live.days)
    live.days[day].actions[1] += 100
    d = compare(engine, 7, live, rebuilt, T)
    assert d is not None and d.state_differs and "108" in d.features
    assert d.rebuilt_profile.arrays() == engine.evaluate(7, rebuilt, T).arrays()
    # a user missing from live state entirely
    d = compare(engine, 7, UserState(), rebuilt, T)
    assert d is not None and set(d.features) == {"106", "107", "108", "110"}


def test_api_token_file_env_and_check(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    cfg = parse_config({"embedded_broker": {"run_dir": str(tmp_path / "run")}}, env={})
    token = api_token(cfg)
    path = tmp_path / "run" / "api-token"
    assert len(token) >= 40 and path.read_text().strip() == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert api_token(cfg) == token                      # reused, not regenerated
    monkeypatch.setenv(ENV, "from-env")
    assert api_token(cfg) == "from-env"
    assert authorized(f"Bearer {token}", token)
    assert not authorized(None, token) and not authorized(token, token)
    assert not authorized("Bearer wrong", token) and not authorized("Basic x", token)
