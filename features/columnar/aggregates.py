"""FEATURES.md §3's window metrics for many users at once, from a `Stack`.

A user's rows are by day ascending, so a W-day window's rows (age = day(as of) - day < W) are
a suffix of them and its sums are differences of cumulative sums over the rows
(`window_arrays_reference`, the former way, put the day counters in a [user, age] matrix and
read its cumulative sums at age W-1). Sessions come from the runs: a window's
runs are a suffix of the user's runs, so its session count and summed duration are differences
of cumulative sums over the runs (as in `features.metrics.window_metrics_all`). Every sum is an
integer; each ratio is the same IEEE division of the same two numbers as the reference's.
The same arrays give the closed days' aggregates (`profile-aggregates`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from features.columnar.stack import Stack
from features.state import STATE_DAYS

METRIC_KEYS = ("actions", "active_days", "actions_per_active_day", "unique_items",
               "unique_item_ratio", "avg_dwell_time", "sessions", "avg_session_duration")
_I64 = np.int64
# the integer day counters summed over a window, in this order, then one per action code
_TOTAL, _ACTIVE, _DWELL_MS, _DWELL_N, _ITEMS = range(5)


def window_arrays(st: Stack, today: np.ndarray, windows: Sequence[int], tz: int, gap: int,
                  action_names: dict[str, int], rates: bool = True
                  ) -> dict[int, dict[str, np.ndarray]]:
    """{W: {metric: [U] array}} for each W (<= 30), as of days `today` [U]; keys in the
    reference's order. `st` must hold the codes of `action_names`, in that order, unless
    rates=False, which leaves out the `rate_<action>` metrics (a stack without codes).

    A user's rows are by day ascending, so a W-day window's rows are a suffix of them (ages
    < W): its sums are differences of cumulative sums over the rows, as the sessions'
    (`window_arrays_reference` sums a [user, age] matrix instead)."""
    U = st.U
    row_age = today[st.row_user] - st.row_day
    counters = np.zeros((len(row_age) + 1, 5 + (len(action_names) if rates else 0)),
                        dtype=_I64)
    rows = counters[1:]
    rows[:, _TOTAL] = st.row_total
    rows[:, _ACTIVE] = st.row_total > 0
    rows[:, _DWELL_MS] = st.row_dwell_ms
    rows[:, _DWELL_N] = st.row_dwell_n
    rows[:, _ITEMS] = st.row_items
    names = list(action_names) if rates else []
    if names:
        assert st.row_codes.shape[1] == len(names), "the stack lacks the action codes"
        rows[:, 5:] = st.row_codes
    np.cumsum(counters, axis=0, out=counters)
    end = counters[st.row_start + st.D]
    sessions = _sessions(st, today, windows, tz, gap)
    out: dict[int, dict[str, np.ndarray]] = {}
    for W in windows:
        # the rows before the window are a prefix of the user's rows
        first = st.row_start + np.bincount(st.row_user[row_age >= W], minlength=U)
        s = end - counters[first]
        out[W] = _metrics(s, sessions[W], names)
    return out


def _metrics(s: np.ndarray, sessions: tuple[np.ndarray, np.ndarray],
             names: list[str]) -> dict[str, np.ndarray]:
    """A window's metrics from its summed counters [U, 5 + codes] and sessions."""
    actions = s[:, _TOTAL]
    active = s[:, _ACTIVE]
    items = s[:, _ITEMS]
    dwell_ms = s[:, _DWELL_MS]
    dwell_n = s[:, _DWELL_N]
    n_sessions, duration = sessions
    per_action = np.maximum(actions, 1).astype(np.float64)
    m = {
        "actions": actions,
        "active_days": active,
        "actions_per_active_day": actions / np.maximum(active, 1),
        "unique_items": items,
        "unique_item_ratio": items / per_action,
        "avg_dwell_time": np.where(dwell_n > 0, dwell_ms / np.maximum(dwell_n, 1) / 1000, 0.0),
        "sessions": n_sessions,
        "avg_session_duration": np.where(n_sessions > 0,
                                         duration / np.maximum(n_sessions, 1), 0.0),
    }
    for c, name in enumerate(names):
        m[f"rate_{name}"] = s[:, 5 + c] / per_action
    return m


def window_arrays_reference(st: Stack, today: np.ndarray, windows: Sequence[int], tz: int,
                            gap: int, action_names: dict[str, int]
                            ) -> dict[int, dict[str, np.ndarray]]:
    """`window_arrays` by a [user, age] matrix of the day counters and its cumulative sums
    (the former way, kept as its reference: tests/unit/features/test_columnar_bulk.py)."""
    U = st.U
    row_age = today[st.row_user] - st.row_day
    inside = row_age < STATE_DAYS
    counters = np.empty((len(row_age), 5 + st.row_codes.shape[1]), dtype=_I64)
    counters[:, _TOTAL] = st.row_total
    counters[:, _ACTIVE] = st.row_total > 0
    counters[:, _DWELL_MS] = st.row_dwell_ms
    counters[:, _DWELL_N] = st.row_dwell_n
    counters[:, _ITEMS] = st.row_items
    counters[:, 5:] = st.row_codes
    by_age = np.zeros((U, STATE_DAYS, counters.shape[1]), dtype=_I64)
    by_age[st.row_user[inside], row_age[inside]] = counters[inside]
    np.cumsum(by_age, axis=1, out=by_age)
    sessions = _sessions(st, today, windows, tz, gap)
    names = list(action_names)
    out: dict[int, dict[str, np.ndarray]] = {}
    for W in windows:
        s = by_age[:, W - 1]
        actions = s[:, _TOTAL]
        active = s[:, _ACTIVE]
        items = s[:, _ITEMS]
        dwell_ms = s[:, _DWELL_MS]
        dwell_n = s[:, _DWELL_N]
        n_sessions, duration = sessions[W]
        per_action = np.maximum(actions, 1).astype(np.float64)
        m = {
            "actions": actions,
            "active_days": active,
            "actions_per_active_day": actions / np.maximum(active, 1),
            "unique_items": items,
            "unique_item_ratio": items / per_action,
            "avg_dwell_time": np.where(dwell_n > 0,
                                       dwell_ms / np.maximum(dwell_n, 1) / 1000, 0.0),
            "sessions": n_sessions,
            "avg_session_duration": np.where(n_sessions > 0,
                                             duration / np.maximum(n_sessions, 1), 0.0),
        }
        for c, name in enumerate(names):
            m[f"rate_{name}"] = s[:, 5 + c] / per_action
        out[W] = m
    return out


def _sessions(st: Stack, today: np.ndarray, windows: Sequence[int], tz: int,
              gap: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{W: (sessions, summed session duration)} per user."""
    run_user = st.row_user[st.run_row]
    run_day = st.row_day[st.run_row]
    day_start = run_day * 86400 - tz
    first = day_start + st.run_first
    last = day_start + st.run_last
    R = len(first)
    gaps = np.zeros(R, dtype=_I64)
    gaps[1:] = first[1:] - last[:-1]
    joins = gaps <= gap
    joins[st.run_start[st.run_n > 0]] = False       # a user's first run starts a session
    c_new = np.zeros(R + 1, dtype=_I64)
    np.cumsum(~joins, out=c_new[1:])
    c_len = np.zeros(R + 1, dtype=_I64)
    np.cumsum(last - first, out=c_len[1:])
    c_gap = np.zeros(R + 1, dtype=_I64)
    np.cumsum(np.where(joins, gaps, 0), out=c_gap[1:])
    run_age = today[run_user] - run_day
    end = st.run_start + st.run_n
    out = {}
    for W in windows:
        # the runs before the window are a prefix of the user's runs
        j = st.run_start + np.bincount(run_user[run_age >= W], minlength=st.U)
        has = j < end
        j1 = np.minimum(j + 1, end)
        sessions = np.where(has, 1 + c_new[end] - c_new[j1], 0)
        duration = np.where(has, c_len[end] - c_len[j] + c_gap[end] - c_gap[j1], 0)
        out[W] = (sessions, duration)
    return out


def metric_dicts(arrays: dict[int, dict[str, np.ndarray]]) -> list[dict[int, dict[str, Any]]]:
    """Per user {W: {metric: value}} (Python ints and floats, as the reference's)."""
    per_window = []
    for W, m in arrays.items():
        keys = tuple(m)
        rows = zip(*(a.tolist() for a in m.values()))
        per_window.append((W, keys, rows))
    if not per_window:
        return []
    users: list[dict[int, dict[str, Any]]] = [
        {} for _ in range(len(next(iter(arrays.values()))["actions"]))]
    for W, keys, rows in per_window:
        for u, row in zip(users, rows):
            u[W] = dict(zip(keys, row))
    return users
