"""A micro-batch of `user-events` messages validated together (FEATURES.md §1.1, §6): each value
parsed once, the checks run over arrays, the same `Event`s and dead letters as
`features.events.EventParser.parse_message` gives message by message.

The common shape (a JSON object with integer user_id, item_id and timestamp, an integer
action_type or else a configured event_type, an optional numeric dwell_time and string event_id,
a bytes key) is checked in bulk: numpy compares the ranges, the timestamp unit, the configured
actions, the clock skew. Every message outside that shape, and every one that fails a bulk
check, goes through the per-event parser, which stays the reference: so a rejection's reason
and text are its own, and only the verdict "valid" is decided here.
tests/unit/features/test_event_columns.py holds the two equal on generated batches.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import orjson

from features.events import (
    MAX_DWELL_SECONDS,
    MAX_EVENT_BYTES,
    MAX_EVENT_ID_CHARS,
    MAX_TIMESTAMP,
    MS_THRESHOLD,
    Event,
    EventParser,
    Rejection,
    new_event,
)

MS_THRESHOLD_INT = int(MS_THRESHOLD)    # (for an integer timestamp)
EMPTY = Rejection("malformed_json", "empty message (no value)")


@dataclass
class ParsedBatch:
    """The verdict on each message of a batch, in batch order: `events` holds (index, Event)
    of the valid ones, `rejected` (index, Rejection) of the others."""
    events: list[tuple[int, Event]] = field(default_factory=list)
    rejected: list[tuple[int, Rejection]] = field(default_factory=list)


def _load(values: Sequence[bytes | None]) -> tuple[list[int], list[dict]]:
    """(index, object) of the values that are JSON objects within the size limit; the rest
    are left to the reference parser."""
    loads, err = orjson.loads, orjson.JSONDecodeError
    try:        # the usual batch: every value is JSON (one pass, no per-value try)
        parsed = [loads(raw) for raw in values]     # type: ignore[arg-type] # None: TypeError
    except (err, TypeError):
        pass
    else:
        idx = [i for i, (raw, o) in enumerate(zip(values, parsed))
               if type(o) is dict and type(raw) is bytes and len(raw) <= MAX_EVENT_BYTES]
        return idx, [parsed[i] for i in idx]
    idx = []
    objs: list[dict] = []
    for i, raw in enumerate(values):
        if type(raw) is not bytes or len(raw) > MAX_EVENT_BYTES:
            continue
        try:
            o = loads(raw)
        except err:
            continue
        if type(o) is dict:
            idx.append(i)
            objs.append(o)
    return idx, objs


def _common_shape(objs: list[dict], keys: Sequence[bytes | str | None],
                  idx: list[int], event_types: dict[str, int]) -> tuple[list[int], list[tuple]]:
    """Of the loaded objects, (index, fields) of those in the common shape, the action a
    configured `event_type` names standing for a missing action_type."""
    out_idx: list[int] = []
    out: list[tuple] = []
    for i, o in zip(idx, objs):
        g = o.get
        uid, iid, ts, act = g("user_id"), g("item_id"), g("timestamp"), g("action_type")
        etype = g("event_type")
        if etype is not None:
            if act is not None or type(etype) is not str:
                continue
            act = event_types.get(etype)
        if type(uid) is int and type(iid) is int and type(ts) is int and type(act) is int:
            dwell, eid, key = g("dwell_time"), g("event_id"), keys[i]
            if (dwell is None or type(dwell) is int or type(dwell) is float) and \
                    (eid is None or type(eid) is str) and type(key) is bytes:
                out_idx.append(i)
                out.append((uid, iid, ts, act, dwell, eid, key))
    return out_idx, out


def parse_batch(parser: EventParser, values: Sequence[bytes | None],
                keys: Sequence[bytes | str | None], now: float) -> ParsedBatch:
    """`parser.parse_message(values[i], keys[i], now)` for every i (a None value: the empty
    message's malformed_json), as a ParsedBatch."""
    n = len(values)
    verdict: list[Event | Rejection | None] = [None] * n
    loaded_idx, objs = _load(values)
    idx, rows = _common_shape(objs, keys, loaded_idx, parser.event_types)
    if rows:
        valid = _valid_rows(parser, rows, now)
        if valid is not None:
            ok, seconds, dwell_ms = valid
            for j, i in enumerate(idx):
                if ok[j]:
                    uid, iid, _, act, _, eid, _ = rows[j]
                    verdict[i] = new_event(uid, iid, seconds[j], act, dwell_ms[j], eid)
    out = ParsedBatch()
    parse = parser.parse_message
    for i in range(n):
        v = verdict[i]
        if v is None:
            raw = values[i]
            v = EMPTY if raw is None else parse(raw, keys[i], now)
        if type(v) is Rejection:
            out.rejected.append((i, v))
        else:
            out.events.append((i, v))
    return out


def _valid_rows(parser: EventParser, rows: list[tuple], now: float
                ) -> tuple[list[bool], list[int], list[int | None]] | None:
    """For rows of the common shape: whether each passes every check, and its timestamp in
    seconds and dwell in ms. None when a value does not fit the arrays (an integer beyond 64
    bits): the reference then judges every row."""
    uid, iid, ts, act, dwell, eid, key = zip(*rows)
    try:
        U = np.array(uid, dtype=np.int64)
        Id = np.array(iid, dtype=np.int64)
        T = np.array(ts, dtype=np.int64)
        A = np.array(act, dtype=np.int64)
        has_dwell = np.fromiter((d is not None for d in dwell), dtype=bool, count=len(rows))
        Dw = np.array([0.0 if d is None else d for d in dwell], dtype=np.float64)
    except OverflowError:
        return None
    ok = (U >= 0) & (Id >= 0) & (T >= 0)
    unit = parser.unit
    if unit == "ms":
        sec = T // 1000
    elif unit == "auto":
        sec = np.where(T >= MS_THRESHOLD_INT, T // 1000, T)
    else:
        sec = T
    ok &= sec < MAX_TIMESTAMP
    # (NaN fails both comparisons, as it fails the reference's)
    ok &= ~has_dwell | ((Dw >= 0) & (Dw <= MAX_DWELL_SECONDS))
    ok &= np.isin(A, np.fromiter(parser.action_codes, dtype=np.int64))
    ok &= sec <= now + parser.max_skew
    ok &= np.fromiter((e is None or len(e) <= MAX_EVENT_ID_CHARS for e in eid), dtype=bool,
                      count=len(rows))
    ok &= np.fromiter((k == b"%d" % u for k, u in zip(key, uid)), dtype=bool, count=len(rows))
    # round(dwell * 1000) of the reference: half to even, on the same double product
    ms = np.rint(np.where(ok & has_dwell, Dw, 0.0) * 1000.0).astype(np.int64).tolist()
    dwell_ms = [m if d else None for m, d in zip(ms, has_dwell.tolist())]
    return ok.tolist(), sec.tolist(), dwell_ms
