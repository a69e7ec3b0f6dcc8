"""Scheduled runs as pure functions: when a profile can next change, the stream clock, and the
run times of `scheduled_update`.

A profile evaluated as of T depends on the state and on day(T) only (FEATURES.md §2–§4), so with
no new events it can change only on a day when one of the user's days leaves one of the
windows: day d with data leaves the W-day window on day d + W. `next_change_day` is the first
such day, or the day after the user's last day while that day's aggregates are unpublished
(`open_day`); the hourly job visits only users whose day has come.

The reference of the same concept as features/columnar/schedule.py (the columnar layout).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from features.config import ProfileConfig
from features.events import day_of
from features.state import STATE_DAYS, UserState

NEVER = -1      # no day left on which the profile can change (no data in any window)
WEEKDAYS = {"monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5,
            "saturday": 6, "sunday": 0}
JOBS = ("hourly", "daily", "weekly")

# Config sections whose values decide a published array; a change of any of them means every
# stored profile must be re-evaluated (the daily run does it when this fingerprint moves).
FEATURE_SECTIONS = ("events", "interest_tags", "behavior_preferences", "activity_levels",
                    "user_types", "extra_features")


def next_change_day(state: UserState, eval_day: int, windows: list[int]) -> int:
    """The first day after eval_day on which the profile can differ from the one as of
    eval_day, or NEVER; but no later than the day after the user's open day (`open_day`),
    when that day's aggregates are due (on or before eval_day when a run is late: due now).
    `windows` are every window length the features read."""
    best = NEVER
    for d in state.days:
        for W in windows:
            leave = d + W
            if leave > eval_day and (best == NEVER or leave < best):
                best = leave
                break                   # windows ascend: later W leave later
    last = open_day(state)
    if last is not None and (best == NEVER or last + 1 < best):
        best = last + 1
    return best


def open_day(state: UserState) -> int | None:
    """The user's last day with data (day(T)) while its `profile-aggregates` record is not
    published (`closed_day` before it), else None. Every earlier day was closed by the event
    that moved T past it; this one closes with a later event or, once stream time has passed
    it, in a scheduled run."""
    if not state.days:
        return None
    last = max(state.days)
    return last if last > state.closed_day else None


def is_idle(state: UserState, as_of: int, tz: int) -> bool:
    """No event in the STATE_DAYS days ending at as_of: nothing of the user is in any window."""
    return state.T >= 0 and day_of(state.T, tz) <= day_of(as_of, tz) - STATE_DAYS


def retire(state: UserState) -> UserState:
    """An idle user's state without its data: only what keeps versions and redelivery checks
    right if the user comes back (T, source offset, version, what was last published, the
    last closed day)."""
    return UserState(T=state.T, source_offset=state.source_offset, version=state.version,
                     published_digest=state.published_digest,
                     published_as_of=state.published_as_of, closed_day=state.closed_day)


def feature_fingerprint(cfg: ProfileConfig) -> int:
    """A stable 32-bit fingerprint of the feature definitions (not deployment settings)."""
    raw = orjson.dumps({k: cfg.model_dump(mode="json")[k] for k in FEATURE_SECTIONS},
                       option=orjson.OPT_SORT_KEYS)
    return int.from_bytes(hashlib.blake2b(raw, digest_size=4).digest(), "little")


@dataclass(frozen=True)
class CronSpec:
    job: str
    cron: str           # five-field crontab, read in `scheduled_update.timezone`


def cron_specs(cfg: ProfileConfig) -> list[CronSpec]:
    """The run times of the enabled jobs: hourly at minute 0, daily "HH:MM", weekly
    "weekday:HH:MM"."""
    s = cfg.scheduled_update
    out = []
    if s.hourly_update:
        out.append(CronSpec("hourly", "0 * * * *"))
    if s.daily_deep_update:
        hh, mm = s.daily_deep_update.split(":")
        out.append(CronSpec("daily", f"{int(mm)} {int(hh)} * * *"))
    if s.weekly_full_update:
        day, hh, mm = s.weekly_full_update.split(":")
        out.append(CronSpec("weekly", f"{int(mm)} {int(hh)} * * {WEEKDAYS[day]}"))
    return out
