"""The one-pass window metrics the engine uses equal the per-window reference, value for value."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.metrics import window_metrics, window_metrics_all
from features.state import DayBucket, UserState

TZ, GAP = 8 * 3600, 1800
ACTIONS = {"view": 0, "click": 1, "like": 2, "share": 3}
WINDOWS = (1, 7, 30)


@st.composite
def states(draw):
    today = draw(st.integers(20000, 20100))
    s = UserState()
    for d in draw(st.sets(st.integers(today - 40, today), max_size=35)):
        start = d * 86400 - TZ
        marks = sorted(draw(st.lists(st.integers(0, 86399), min_size=0, max_size=12)))
        runs = []
        for t in marks:      # runs as the state keeps them: consecutive gaps <= GAP merged
            if runs and start + t - runs[-1][1] <= GAP:
                runs[-1][1] = start + t
            else:
                runs.append([start + t, start + t])
        actions = draw(st.dictionaries(st.sampled_from(list(ACTIONS.values())),
                                       st.integers(0, 9), max_size=4))
        s.days[d] = DayBucket(actions, draw(st.integers(0, 10 ** 7)), draw(st.integers(0, 50)),
                              {}, runs)
    s.items = draw(st.dictionaries(st.integers(0, 10 ** 6), st.integers(today - 40, today),
                                   max_size=60))
    s.T = today * 86400 - TZ + draw(st.integers(0, 86399))
    return s, draw(st.integers(0, 3))     # evaluated up to 3 days after T


@settings(max_examples=400, deadline=None)
@given(states())
def test_one_pass_equals_reference(case):
    state, later = case
    T = state.T + later * 86400
    fast = window_metrics_all(state, T, WINDOWS, TZ, GAP, ACTIONS)
    for W in WINDOWS:
        assert fast[W] == window_metrics(state, T, W, TZ, GAP, ACTIONS), W


def test_empty_state():
    fast = window_metrics_all(UserState(), 20000 * 86400, WINDOWS, TZ, GAP, ACTIONS)
    assert fast[7] == window_metrics(UserState(), 20000 * 86400, 7, TZ, GAP, ACTIONS)
    assert fast[7]["sessions"] == 0 and fast[7]["actions"] == 0


@pytest.mark.parametrize("gap_to_next", [GAP, GAP + 1])
def test_session_crossing_the_window_edge_is_cut_there(gap_to_next):
    # a session spanning the start of the 1-day window counts in it from its first run there
    day = 20000
    start = day * 86400 - TZ
    s = UserState(T=start + 10_000)
    s.days[day - 1] = DayBucket({0: 1}, 0, 0, {}, [[start - 100, start - 50]])
    s.days[day] = DayBucket({0: 2}, 0, 0, {}, [[start - 50 + gap_to_next, start + 10_000]])
    fast = window_metrics_all(s, s.T, WINDOWS, TZ, GAP, ACTIONS)
    for W in WINDOWS:
        assert fast[W] == window_metrics(s, s.T, W, TZ, GAP, ACTIONS)
    assert fast[1]["sessions"] == 1
    assert fast[7]["sessions"] == (1 if gap_to_next == GAP else 2)
