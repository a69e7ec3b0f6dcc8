"""Drift between a live state and one rebuilt from the event log (the weekly full run).

Both are compared as of the run's clock T: only what can still reach a profile counts (days,
items and event ids inside the 30-day window ending at day(T)), so a live state the daily run
retired equals a rebuilt one that still holds the old days.
"""
from __future__ import annotations

from dataclasses import dataclass

from features.columnar.layout import HEADER_SIZE, ColumnarState
from features.events import day_of
from features.profile import ARRAY_KEYS, FeatureEngine, Profile
from features.state import STATE_DAYS, UserState


def window_view(state: UserState, as_of: int, tz: int) -> tuple:
    """What of the state can affect a profile as of `as_of`, in a comparable form."""
    oldest = day_of(as_of, tz) - STATE_DAYS + 1
    days = tuple(sorted(
        (d, tuple(sorted(b.actions.items())), b.dwell_ms, b.dwell_n,
         tuple(sorted(b.cats.items())), tuple(map(tuple, b.runs)))
        for d, b in state.days.items() if d >= oldest))
    items = tuple(sorted((i, d) for i, d in state.items.items() if d >= oldest))
    ids = tuple(sorted((h, d) for h, d in state.event_ids.items() if d >= oldest))
    return days, items, ids


@dataclass
class UserDrift:
    user_id: int
    state_differs: bool
    features: tuple[str, ...]           # feature ids whose arrays differ
    rebuilt_profile: Profile


def compare(engine: FeatureEngine, user_id: int, live: UserState, rebuilt: UserState,
            as_of: int) -> UserDrift | None:
    """None when live and rebuilt agree as of `as_of`; else what differs."""
    tz = engine.tz
    T_live, T_rebuilt = max(as_of, live.T), max(as_of, rebuilt.T)
    if live.T == rebuilt.T and \
            window_view(live, T_live, tz) == window_view(rebuilt, T_rebuilt, tz):
        return None
    p_rebuilt = engine.evaluate(user_id, rebuilt, T_rebuilt)
    p_live = engine.evaluate(user_id, live, T_live) if live.T >= 0 else None
    keys = sorted(set(p_rebuilt.features) | set(p_live.features if p_live else ()))
    differ = tuple(k for k in keys
                   if p_live is None or p_live.features.get(k) != p_rebuilt.features.get(k))
    return UserDrift(user_id, True, differ, p_rebuilt)


def compare_columnar(engine: FeatureEngine, user_id: int, live: ColumnarState,
                     rebuilt: ColumnarState, as_of: int) -> UserDrift | None:
    """`compare` of two v3 states: the same T and the same record body are the same state
    (most users, without a conversion); else the reference states are compared."""
    if live.T == rebuilt.T and live.counts() == rebuilt.counts() and live.w == rebuilt.w and \
            live.buf[HEADER_SIZE:] == rebuilt.buf[HEADER_SIZE:]:
        return None
    from features.columnar.codec import to_reference  # (it imports this module)
    return compare(engine, user_id, to_reference(live, engine.tz),
                   to_reference(rebuilt, engine.tz), as_of)


def empty_drift_counts(engine: FeatureEngine) -> dict[str, int]:
    return {k: 0 for k in (*ARRAY_KEYS, *engine.extensions)}
