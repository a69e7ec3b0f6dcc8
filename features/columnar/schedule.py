"""What the stream and the scheduled runs ask of a state besides its profile, on the v3 layout:
the next day its profile can change (`features.schedule.next_change_day`), idle users and their
retirement, the state summary of the query API, and the drift view of the weekly run.

The same concept as features/schedule.py (the per-user reference), on the columnar layout.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from features import drift, schedule
from features.columnar.codec import to_reference
from features.columnar.layout import S_AGE, ColumnarState
from features.state import STATE_DAYS, UNKNOWN_DUE

NEVER = schedule.NEVER


def days(s: ColumnarState, tz: int) -> list[int]:
    """The days the state holds data for, ascending."""
    base = s.base_day(tz)
    return [base - a for a in s.ages()]


def next_change_day(s: ColumnarState, eval_day: int, windows: Sequence[int], tz: int) -> int:
    """`features.schedule.next_change_day`: the first day after eval_day on which the profile
    can differ from the one as of eval_day, or NEVER; no later than the day after the open day
    (`open_day`). `windows` ascend (FeatureEngine.windows)."""
    best = NEVER
    for d in days(s, tz):
        for W in windows:
            leave = d + W
            if leave > eval_day and (best == NEVER or leave < best):
                best = leave
                break
    last = open_day(s, tz)
    if last is not None and (best == NEVER or last + 1 < best):
        best = last + 1
    return best


def open_day(s: ColumnarState, tz: int) -> int | None:
    """`features.schedule.open_day`: the last day with data while its aggregates are not
    published, else None."""
    if not s.D:
        return None
    last = s.base_day(tz) - s.buf[s.off[S_AGE] + s.D - 1]
    return last if last > s.closed_day else None


def next_change_days(states: Sequence[ColumnarState], eval_days: Sequence[int] | np.ndarray,
                     windows: Sequence[int], tz: int) -> list[int]:
    """`next_change_day` for many states at once (a scheduled run's chunk)."""
    U = len(states)
    if not U:
        return []
    D = np.fromiter((s.D for s in states), dtype=np.int64, count=U)
    T = np.fromiter((s.T for s in states), dtype=np.int64, count=U)
    ages = np.frombuffer(b"".join([s.buf[s.off[S_AGE]:s.off[S_AGE] + s.D] for s in states]),
                         dtype=np.uint8)
    row_user = np.repeat(np.arange(U), D)
    day = (T + tz)[row_user] // 86400 - ages
    after = np.asarray(eval_days, dtype=np.int64)[row_user]
    big = np.iinfo(np.int64).max
    best = np.full(len(day), big, dtype=np.int64)
    for W in windows:       # the first leave after eval_day is the smallest: windows ascend
        leave = day + W
        np.minimum(best, np.where(leave > after, leave, big), out=best)
    out = np.full(U, big, dtype=np.int64)
    np.minimum.at(out, row_user, best)
    # the open day's aggregates are due the day after it (rows: days ascending, so a user's
    # last row is its last day)
    has = D > 0
    last_row = np.cumsum(D) - 1
    last_day = np.where(has, day[np.where(has, last_row, 0)] if len(day) else 0, 0)
    closed = np.fromiter((s.closed_day for s in states), dtype=np.int64, count=U)
    due = np.where(has & (last_day > closed), last_day + 1, big)
    np.minimum(out, due, out=out)
    return np.where(out == big, NEVER, out).tolist()


def is_idle(s: ColumnarState, as_of: int, tz: int) -> bool:
    """No event in the STATE_DAYS days ending at as_of (`features.schedule.is_idle`)."""
    return s.T >= 0 and (s.T + tz) // 86400 <= (as_of + tz) // 86400 - STATE_DAYS


def retire(s: ColumnarState) -> ColumnarState:
    """An idle user's state without its data (`features.schedule.retire`)."""
    out = ColumnarState.new()
    out.T, out.source_offset, out.version = s.T, s.source_offset, s.version
    out.published_digest, out.published_as_of = s.published_digest, s.published_as_of
    out.closed_day = s.closed_day
    out.due_day = UNKNOWN_DUE
    return out


def state_summary(s: ColumnarState, tz: int) -> dict[str, Any]:
    """What `streams.pipeline.Pipeline.state_summary` reports of a state."""
    totals = s.day_totals()
    return {"T": s.T, "source_offset": s.source_offset, "version": s.version,
            "events": sum(totals),
            "days": {str(d): n for d, n in zip(days(s, tz), totals)},
            "event_ids": s.E}


def window_view(s: ColumnarState, as_of: int, tz: int) -> tuple:
    """`features.drift.window_view` of the state (through the reference state: the weekly
    run compares a few users, not every one)."""
    return drift.window_view(to_reference(s, tz), as_of, tz)
