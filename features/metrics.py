"""Window metrics of FEATURES.md §3, read from a user's state as of T."""
from __future__ import annotations

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
    open_first = open_last = None
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
