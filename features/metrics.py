"""Window metrics of FEATURES.md §3, read from a user's state as of T."""
from __future__ import annotations

from bisect import bisect_left
from typing import Iterable

from features.events import day_of
from features.state import UserState


def window_metrics(state: UserState, T: int, W: int, tz: int, gap: int,
                   action_names: dict[str, int]) -> dict[str, float | int]:
    """The W-day window as of T. T must be >= state.T (every stored event is then <= T)."""
    first_day = day_of(T, tz) - W + 1
    actions = active_days = dwell_ms = dwell_n = 0
    per_action: dict[int, int] = {}
    sessions = 0
    duration_sum = 0
    open_first = 0                  # the session run being extended (none while open_last is)
    open_last: int | None = None
    for d in sorted(state.days):
        if d < first_day:
            continue
        b = state.days[d]
        n = b.total
        actions += n
        active_days += n > 0
        dwell_ms += b.dwell_ms
        dwell_n += b.dwell_n
        for a, c in b.actions.items():
            per_action[a] = per_action.get(a, 0) + c
        for first, last in b.runs:
            if open_last is not None and first - open_last <= gap:
                open_last = last
                continue
            if open_last is not None:
                sessions += 1
                duration_sum += open_last - open_first
            open_first, open_last = first, last
    if open_last is not None:
        sessions += 1
        duration_sum += open_last - open_first
    unique_items = sum(1 for d in state.items.values() if d >= first_day)
    return _metrics(actions, active_days, unique_items, dwell_ms, dwell_n, sessions,
                    duration_sum, per_action, action_names)


def _metrics(actions: int, active_days: int, unique_items: int, dwell_ms: int, dwell_n: int,
             sessions: int, duration_sum: int, per_action: dict[int, int],
             action_names: dict[str, int]) -> dict[str, float | int]:
    """FEATURES.md §3's window metrics from the window's integer sums."""
    m: dict[str, float | int] = {
        "actions": actions,
        "active_days": active_days,
        "actions_per_active_day": actions / max(1, active_days),
        "unique_items": unique_items,
        "unique_item_ratio": unique_items / max(1, actions),
        "avg_dwell_time": dwell_ms / dwell_n / 1000 if dwell_n else 0.0,
        "sessions": sessions,
        "avg_session_duration": duration_sum / sessions if sessions else 0.0,
    }
    for name, code in action_names.items():
        m[f"rate_{name}"] = per_action.get(code, 0) / max(1, actions)
    return m


def window_metrics_all(state: UserState, T: int, windows: Iterable[int], tz: int, gap: int,
                       action_names: dict[str, int]) -> dict[int, dict[str, float | int]]:
    """`window_metrics` for several windows in one pass over the state (what every evaluation
    needs: the windows are nested suffixes of the same days). Equal to `window_metrics` for
    each W, value for value (tests/unit/features/test_metrics_all.py): every sum is over
    integers, and each ratio is the same division of the same two numbers.

    Sessions: a run continues the session before it iff its start is within `gap` of the
    previous run's end, so a window's runs (a suffix of all runs) split into sessions at the
    same places, its first run always starting one; a session lasts the sum of its runs'
    lengths plus the gaps inside it."""
    today = day_of(T, tz)
    firsts = {W: today - W + 1 for W in windows}
    oldest = min(firsts.values())
    days = sorted(d for d in state.days if d >= oldest)
    buckets = [state.days[d] for d in days]
    totals = [b.total for b in buckets]
    run_day: list[int] = []          # per run, in order: its day, length, gap to the previous
    run_len: list[int] = []          # run, and whether it continues that run's session
    run_gap: list[int] = []
    joins: list[bool] = []
    prev_last = None
    for d, b in zip(days, buckets):
        for first, last in b.runs:
            run_day.append(d)
            run_len.append(last - first)
            if prev_last is None:
                run_gap.append(0)
                joins.append(False)
            else:
                run_gap.append(first - prev_last)
                joins.append(first - prev_last <= gap)
            prev_last = last
    item_days = sorted(state.items.values())
    out: dict[int, dict[str, float | int]] = {}
    for W, first_day in firsts.items():
        i = bisect_left(days, first_day)
        actions = sum(totals[i:])
        active_days = sum(1 for n in totals[i:] if n > 0)
        dwell_ms = sum(b.dwell_ms for b in buckets[i:])
        dwell_n = sum(b.dwell_n for b in buckets[i:])
        per_action: dict[int, int] = {}
        for b in buckets[i:]:
            for a, c in b.actions.items():
                per_action[a] = per_action.get(a, 0) + c
        j = bisect_left(run_day, first_day)
        if j < len(run_day):
            inner = range(j + 1, len(run_day))
            sessions = 1 + sum(1 for r in inner if not joins[r])
            duration_sum = sum(run_len[j:]) + sum(run_gap[r] for r in inner if joins[r])
        else:
            sessions = duration_sum = 0
        unique_items = len(item_days) - bisect_left(item_days, first_day)
        out[W] = _metrics(actions, active_days, unique_items, dwell_ms, dwell_n, sessions,
                          duration_sum, per_action, action_names)
    return out


def category_totals(state: UserState, T: int, W: int, tz: int, decay: float,
                    weights: dict[int, float]) -> dict[int, tuple[float, int]]:
    """Category k -> (decayed weighted score, event count) over the W-day window as of T.
    Summed day by day in ascending order, actions in ascending code: one fixed float order."""
    today = day_of(T, tz)
    first_day = today - W + 1
    out: dict[int, list] = {}
    for d in sorted(state.days):
        if d < first_day:
            continue
        factor = decay ** (today - d)
        for (k, a), c in sorted(state.days[d].cats.items()):
            acc = out.setdefault(k, [0.0, 0])
            acc[0] += weights.get(a, 1.0) * c * factor
            acc[1] += c
    return {k: (v[0], v[1]) for k, v in out.items()}
