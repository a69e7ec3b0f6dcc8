"""User events (FEATURES.md §1.1) and their stateless validation (§6, every check but too_late).

`EventParser` turns raw bytes into an `Event` or a `Rejection` with a reason code; the checks
run in the order §6 lists. A `user-events` message (`parse_message`) must carry the user_id as
its key; a line of an events file (`parse_line`, `check_line`: the batch path) has no key to
check. The stateful checks (too_late, duplicate) live in `features.state`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Union, final

import orjson

from features.config import EventsConfig

MAX_EVENT_BYTES = 64 * 1024
MAX_ID = 2 ** 63
MAX_DWELL_SECONDS = 86400
MAX_EVENT_ID_CHARS = 128
MS_THRESHOLD = 1e11        # timestamp_unit auto: a value at or above this is milliseconds
MAX_TIMESTAMP = 2 ** 40    # seconds (year ~36812): anything above is out of range

REASONS = ("malformed_json", "not_an_object", "too_large", "missing_field", "bad_type",
           "out_of_range", "unknown_action", "missing_key", "key_mismatch", "future_timestamp",
           "too_late")


@final                  # (so `type(x) is Rejection` tells the two apart for mypy)
@dataclass(frozen=True, slots=True)
class Event:
    user_id: int
    item_id: int
    ts: int                    # whole Unix seconds
    action: int
    dwell_ms: int | None       # dwell_time rounded to milliseconds (integer sums stay exact)
    event_id: str | None


_new_object = object.__new__
_SET_FIELDS = tuple(getattr(Event, name).__set__ for name in
                    ("user_id", "item_id", "ts", "action", "dwell_ms", "event_id"))


def new_event(user_id: int, item_id: int, ts: int, action: int, dwell_ms: int | None,
              event_id: str | None) -> Event:
    """`Event(...)` in half the time, for the bulk parser (one per event of the stream): a
    frozen dataclass's __init__ sets each field through object.__setattr__; this sets the
    slots directly. tests/unit/features/test_event_columns.py holds the two equal."""
    e = _new_object(Event)
    su, si, st, sa, sd, se = _SET_FIELDS
    su(e, user_id)
    si(e, item_id)
    st(e, ts)
    sa(e, action)
    sd(e, dwell_ms)
    se(e, event_id)
    return e


@final
@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    message: str


class _NoKeyToCheck:
    """What an events-file line has instead of a message key (never None: None is a message
    without a key, which is refused)."""


_LINE = _NoKeyToCheck()
_Key = Union[bytes, str, None, _NoKeyToCheck]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class EventParser:
    """Compiled from the `events` config section: `parse_message(raw, key)` per `user-events`
    message, `parse_line(raw)` / `check_line(obj)` per events-file line."""

    def __init__(self, cfg: EventsConfig, clock: Callable[[], float] = time.time):
        self.unit = cfg.timestamp_unit
        self.max_skew = cfg.max_future_skew_seconds
        self.action_codes = frozenset(cfg.action_types.values())
        self.event_types = dict(cfg.event_types)
        self.clock = clock

    def parse_message(self, raw: bytes | str, key: bytes | str | None,
                      now: float | None = None) -> Event | Rejection:
        """A `user-events` message: its key must be the decimal user_id (None, a message
        without a key, is refused as missing_key)."""
        return self._parse(raw, key, now)

    def parse_line(self, raw: bytes | str, now: float | None = None) -> Event | Rejection:
        """A line of an events file (the batch path): lines have no key to check."""
        return self._parse(raw, _LINE, now)

    def check_line(self, obj: dict, now: float | None = None) -> Event | Rejection:
        """The checks after parsing, for a decoded events-file object (no key to check)."""
        return self._check(obj, _LINE, now)

    def _parse(self, raw: bytes | str, key: _Key, now: float | None) -> Event | Rejection:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return Rejection("malformed_json", f"not valid JSON: {e}")
        if not isinstance(obj, dict):
            return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
        size = len(raw.encode() if isinstance(raw, str) else raw)
        if size > MAX_EVENT_BYTES:
            return Rejection("too_large", f"{size} bytes is over the {MAX_EVENT_BYTES}-byte limit")
        return self._check(obj, key, now)

    def _check(self, obj: dict, key: _Key, now: float | None) -> Event | Rejection:
        for name in ("user_id", "item_id", "timestamp"):
            if name not in obj:
                return Rejection("missing_field", f"required field {name!r} is missing")
        if obj.get("action_type") is None and obj.get("event_type") is None:
            # (null counts as missing, as for the optional fields)
            return Rejection("missing_field", "one of 'action_type' or 'event_type' is required")
        uid, iid, ts = obj["user_id"], obj["item_id"], obj["timestamp"]
        action, etype = obj.get("action_type"), obj.get("event_type")
        dwell, eid = obj.get("dwell_time"), obj.get("event_id")
        if type(uid) is int and type(iid) is int and type(ts) is int and etype is None \
                and type(action) is int and (eid is None or type(eid) is str) \
                and (dwell is None or type(dwell) in (int, float)):
            return self._typed(uid, iid, ts, action, dwell, eid, key, now)
        if not _is_int(uid):
            return Rejection("bad_type", f"user_id must be an integer, got {type(uid).__name__}")
        if not _is_int(iid):
            return Rejection("bad_type", f"item_id must be an integer, got {type(iid).__name__}")
        if not _is_number(ts):
            return Rejection("bad_type", f"timestamp must be a number, got {type(ts).__name__}")
        if action is not None and not _is_int(action):
            return Rejection("bad_type", "action_type must be an integer")
        if etype is not None and not isinstance(etype, str):
            return Rejection("bad_type", "event_type must be a string")
        if dwell is not None and not _is_number(dwell):
            return Rejection("bad_type", "dwell_time must be a number")
        if eid is not None and not isinstance(eid, str):
            return Rejection("bad_type", "event_id must be a string")
        return self._typed(uid, iid, ts, action, dwell, eid, key, now, etype)

    def _typed(self, uid: int, iid: int, ts: int | float, action: int | None,
               dwell: int | float | None, eid: str | None, key: _Key, now: float | None,
               etype: str | None = None) -> Event | Rejection:
        """The checks after the type checks (out_of_range onwards)."""
        if not 0 <= uid < MAX_ID:
            return Rejection("out_of_range", f"user_id {uid} is outside 0..2^63-1")
        if not 0 <= iid < MAX_ID:
            return Rejection("out_of_range", f"item_id {iid} is outside 0..2^63-1")
        seconds = self._seconds(ts)
        if seconds is None:
            return Rejection("out_of_range", f"timestamp {ts!r} is not a time after 1970")
        dwell_ms = None
        if dwell is not None:
            if not (0 <= dwell <= MAX_DWELL_SECONDS):  # also refuses NaN
                return Rejection("out_of_range", f"dwell_time {dwell!r} is outside 0..86400 s")
            dwell_ms = round(dwell * 1000)
        if eid is not None and len(eid) > MAX_EVENT_ID_CHARS:
            return Rejection("out_of_range", f"event_id is {len(eid)} chars, over 128")
        if action is not None and action not in self.action_codes:
            return Rejection("unknown_action", f"action_type {action} is not configured")
        if etype is not None:
            mapped = self.event_types.get(etype)
            if mapped is None:
                return Rejection("unknown_action", f"event_type {etype!r} is not configured")
            if action is not None and action != mapped:
                return Rejection("unknown_action", f"action_type {action} and event_type "
                                 f"{etype!r} (= {mapped}) disagree")
            action = mapped
        if action is None:          # (_check refuses an event with neither)
            return Rejection("missing_field", "one of 'action_type' or 'event_type' is required")
        if not isinstance(key, _NoKeyToCheck):
            if key is None:
                return Rejection("missing_key", f"the message has no key; user-events messages "
                                 f"are keyed by the decimal user_id ({uid})")
            k = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
            if k != str(uid):
                return Rejection("key_mismatch", f"message key {k[:40]!r} is not user_id {uid}")
        now = self.clock() if now is None else now
        if seconds > now + self.max_skew:
            return Rejection("future_timestamp", f"timestamp {seconds} is "
                             f"{seconds - int(now)} s ahead of now (limit {self.max_skew} s)")
        return Event(uid, iid, seconds, action, dwell_ms, eid)

    def _seconds(self, ts: int | float) -> int | None:
        if isinstance(ts, float) and not math.isfinite(ts):
            return None
        if ts < 0:
            return None
        is_ms = self.unit == "ms" or (self.unit == "auto" and ts >= MS_THRESHOLD)
        if is_ms:
            seconds = ts // 1000 if isinstance(ts, int) else math.floor(ts / 1000)
        else:
            seconds = ts if isinstance(ts, int) else math.floor(ts)
        return int(seconds) if seconds < MAX_TIMESTAMP else None


def day_of(ts: int, tz_offset_seconds: int) -> int:
    """day(t) of FEATURES.md §2."""
    return (ts + tz_offset_seconds) // 86400
