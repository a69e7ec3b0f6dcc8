"""One user's micro-batch, as the stream applies it: pure, no Kafka.

Events carry the source offset they came from; the state keeps the last offset applied, so a
redelivered event (offset <= state.source_offset) is skipped and counted, never applied twice.

The reference of the same concept as features/columnar/update.py, which the stream runs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from features.events import Event, day_of
from features.profile import Profile
from features.runtime import FeatureRuntime
from features.state import APPLIED, DUPLICATE, UserState, apply

if TYPE_CHECKING:
    from features.columnar.layout import ColumnarState


@dataclass
class UserUpdate:
    state: UserState
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    too_late: list[tuple[int, Event]] = field(default_factory=list)   # (offset, event)
    # (day, {window: metrics as of the day's last second}) for each day T moved past
    closed_days: list[tuple[int, dict]] = field(default_factory=list)
    profile: Profile | None = None
    changed: bool = False       # the arrays differ from the last published ones

    @property
    def touched(self) -> bool:
        """Whether the state must be written back."""
        return self.applied > 0 or self.duplicates > 0 or self.redelivered > 0 or \
            bool(self.too_late)


def closed_day_metrics(rt: FeatureRuntime, state: UserState, day: int) -> dict[int, dict]:
    """The tumbling daily window's output: 1/7/30-day metrics as of the day's last second."""
    T = day_end(day, rt.engine.tz)
    return rt.engine.metrics_all(state, T, rt.cfg.behavior_preferences.time_windows)


def apply_events(rt: FeatureRuntime, user_id: int, state: UserState,
                 events: list[tuple[int, Event]], evaluate: bool = True) -> UserUpdate:
    """Apply (offset, event) pairs in offset order; evaluate when anything was applied.
    evaluate=False gives only the state (no profile, no closed days): a rebuild from the log."""
    up = UserUpdate(state)
    tz = rt.engine.tz
    rules = rt.engine.rules
    for offset, ev in events:
        if offset <= state.source_offset:
            up.redelivered += 1
            continue
        closing = None
        if evaluate and state.T >= 0 and day_of(ev.ts, tz) > day_of(state.T, tz) and \
                day_of(state.T, tz) > state.closed_day and state.days:
            # Snapshot before the event moves T: later days cannot be taken out afterwards.
            # (A day a scheduled run already closed, or a retired state's, is not published.)
            closing = (day_of(state.T, tz), closed_day_metrics(rt, state, day_of(state.T, tz)))
        outcome = apply(state, ev, rt.catalog.categories(ev.item_id), rules)
        state.source_offset = offset
        if outcome == APPLIED:
            up.applied += 1
            if closing is not None:
                up.closed_days.append(closing)
                state.closed_day = closing[0]
        elif outcome == DUPLICATE:
            up.duplicates += 1
        else:
            up.too_late.append((offset, ev))
    if evaluate and not state.empty and (up.applied or up.redelivered):
        up.profile = rt.engine.evaluate(user_id, state)
        up.changed = up.profile.digest() != state.published_digest
    return up


def mark_published(state: UserState | ColumnarState, profile: Profile) -> int:
    """Record a publish in the state; returns the record's version."""
    state.version += 1
    state.published_digest = profile.digest()
    state.published_as_of = profile.as_of
    return state.version


def day_end(day: int, tz: int) -> int:
    """The last second of an event-time day."""
    return (day + 1) * 86400 - tz - 1


def aggregates_value(user_id: int, day: int, metrics: dict[int, Any], tz: int) -> dict:
    """A closed day's `profile-aggregates` record: its 1/7/30-day metrics as of its last
    second."""
    return {"user_id": user_id, "day": day, "as_of": day_end(day, tz),
            "windows": {str(W): m for W, m in metrics.items()}}
