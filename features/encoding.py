"""Compact binary encoding of `UserState` (never JSON, never pickle).

Layout v2:  header (format, T, source offset, version counter, digest, width, length of Z,
            due day, as_of of the last published record) | Z = zlib(integer array) | event-id hashes
(v1, without the due day, is still read.) The header is fixed-size so scheduled jobs read and
patch it without decoding the rest.
v2 has no closed day (`UserState.closed_day`): it reads as NO_CLOSED_DAY, which says day(T) is
still open, true of every state the stream writes; a state whose day(T) is closed (a scheduled
run published its aggregates) is written as v3 (features.columnar), which keeps it.
The array holds every other number of the state, days and times relative to day(T) so that most
are small; it is stored in the narrowest little-endian integer width that fits (1, 2, 4 or 8
bytes) and byte-shuffled. The 48-bit event-id hashes are random, so they follow uncompressed,
6 bytes each, in the order of the array's event-id entries.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING

import numpy as np

from features.state import EVENT_ID_HASH_BYTES, NO_CLOSED_DAY, UNKNOWN_DUE, DayBucket, UserState

if TYPE_CHECKING:
    from features.columnar.layout import ColumnarState

FORMAT_VERSION = 2
_HEAD_V1 = struct.Struct("<BqqqqBI")
_HEAD = struct.Struct("<BqqqqBIiq")
_HEADS = {1: _HEAD_V1, 2: _HEAD}
# features.columnar: the same header fields at the same positions (4: with the hold-back's
# fields after the closed day)
_COLUMNAR_FORMATS = (3, 4)
_PREFIXES = {**_HEADS, **{f: _HEAD for f in _COLUMNAR_FORMATS}}
_BOOKKEEPING = struct.Struct("<qq")         # version counter, digest: right after T, offset
_BOOKKEEPING_AT = 17
_TAIL = struct.Struct("<iq")                # due day, published as_of: after the v1 fields
_TAIL_AT = _HEAD_V1.size
_CLOSED = struct.Struct("<i")               # v3 only: features.columnar.layout.CLOSED_DAY_AT
_CLOSED_AT = 79
_WIDTHS = {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}


class StateDecodeError(ValueError):
    pass


def encode(state: UserState, tz: int) -> bytes:
    if state.closed_day > NO_CLOSED_DAY and state.days and \
            state.closed_day >= (state.T + tz) // 86400:
        return _encode_columnar(state, tz)      # v2 would read day(T) as open again
    if state.T < 0:
        base = 0
    else:
        base = (state.T + tz) // 86400
    out: list[int] = [len(state.days)]
    extend = out.extend
    for d, b in sorted(state.days.items()):
        day_start = d * 86400 - tz
        acts = sorted(b.actions.items())
        extend((base - d, len(acts)))
        for kv in acts:
            extend(kv)
        cats = sorted(b.cats.items())
        extend((b.dwell_ms, b.dwell_n, len(cats)))
        for (k, a), n in cats:
            extend((k, a, n))
        out.append(len(b.runs))
        for first, last in b.runs:
            extend((first - day_start, last - first))
    items = sorted(state.items.items())
    out.append(len(items))
    prev = 0
    for i, _ in items:
        out.append(i - prev)
        prev = i
    extend([base - d for _, d in items])
    ids = sorted(state.event_ids.items())
    hashes = [h for h, _ in ids]
    out.append(len(ids))
    extend([base - d for _, d in ids])
    arr = np.asarray(out, dtype="<i8")
    lo, hi = (int(arr.min()), int(arr.max())) if len(arr) else (0, 0)
    width = next(w for w in (1, 2, 4, 8) if -(2 ** (8 * w - 1)) <= lo and hi < 2 ** (8 * w - 1))
    # byte-shuffled: every value's low byte first, then the next byte of each... (high bytes are
    # mostly zero and compress to almost nothing)
    shuffled = arr.astype(_WIDTHS[width]).view(np.uint8).reshape(-1, width).T.tobytes()
    # level 1: a quarter of the encode time of level 9 for about 4% more bytes
    body = zlib.compress(shuffled, 1)
    tail = np.asarray(hashes, dtype="<u8").view(np.uint8).reshape(-1, 8)[
        :, :EVENT_ID_HASH_BYTES].tobytes() if hashes else b""
    head = _HEAD.pack(FORMAT_VERSION, state.T, state.source_offset, state.version,
                      state.published_digest, width, len(body), state.due_day,
                      state.published_as_of)
    return head + body + tail


def decode(data: bytes, tz: int, event_ids: bool = True) -> UserState:
    """The state; with event_ids=False the event-id hashes are left out (enough to evaluate,
    not to apply events or re-encode: scheduled jobs then patch the header instead)."""
    if not data:
        raise StateDecodeError("empty state record")
    if data[0] in _COLUMNAR_FORMATS:
        return _decode_columnar(data, tz, event_ids)
    head = _HEADS.get(data[0])
    if head is None:
        raise StateDecodeError(f"unknown state format version {data[0]} (this build reads "
                               f"versions {sorted(_PREFIXES)})")
    try:
        _, T, offset, version, digest, width, n, *v2 = head.unpack_from(data)
        body = zlib.decompress(data[head.size:head.size + n])
        planes = np.frombuffer(body, dtype=np.uint8).reshape(width, -1)
        v = np.ascontiguousarray(planes.T).view(_WIDTHS[width]).ravel().tolist()
        tail = data[head.size + n:]
        due, as_of = v2 if v2 else (UNKNOWN_DUE, T)
        state = UserState(T=T, source_offset=offset, version=version, published_digest=digest,
                          due_day=due, published_as_of=as_of)
        return _from_ints(state, v, tail, tz, event_ids)
    except (struct.error, zlib.error, IndexError, ValueError, KeyError) as e:
        raise StateDecodeError(f"corrupt state record: {e}") from None


@dataclass(frozen=True, slots=True)
class Header:
    """What scheduled jobs read of every state without decoding it."""
    T: int
    source_offset: int
    version: int
    published_digest: int
    due_day: int
    published_as_of: int
    closed_day: int = NO_CLOSED_DAY


def read_header(data: bytes) -> Header:
    head = _PREFIXES.get(data[0]) if data else None
    if head is None or len(data) < head.size:
        raise StateDecodeError("not a state record (unknown format or too short)")
    _, T, offset, version, digest, _, _, *v2 = head.unpack_from(data)
    due, as_of = v2 if v2 else (UNKNOWN_DUE, T)
    closed = _CLOSED.unpack_from(data, _CLOSED_AT)[0] if data[0] in _COLUMNAR_FORMATS and \
        len(data) >= _CLOSED_AT + _CLOSED.size else NO_CLOSED_DAY
    return Header(T, offset, version, digest, due, as_of, closed)


def patch_header(data: bytes, state: UserState | ColumnarState) -> bytes:
    """`data` with the bookkeeping of `state` (version, digest, due day, published as_of and,
    in v3, the closed day); the rest is unchanged. Only for the current formats (older records
    are re-encoded; a v2 record cannot say that day(T) is closed)."""
    if data[0] not in (FORMAT_VERSION, *_COLUMNAR_FORMATS):
        raise StateDecodeError(f"cannot patch a version {data[0]} state record in place")
    out = bytearray(data)
    _BOOKKEEPING.pack_into(out, _BOOKKEEPING_AT, state.version, state.published_digest)
    _TAIL.pack_into(out, _TAIL_AT, state.due_day, state.published_as_of)
    if data[0] in _COLUMNAR_FORMATS:
        _CLOSED.pack_into(out, _CLOSED_AT, state.closed_day)
    return bytes(out)


def _encode_columnar(state: UserState, tz: int) -> bytes:
    from features.columnar.codec import encode as encode_v3
    from features.columnar.codec import from_reference
    return encode_v3(from_reference(state, tz))


def _decode_columnar(data: bytes, tz: int, with_ids: bool) -> UserState:
    """A v3 record (features.columnar) as the reference state."""
    from features.columnar.codec import decode as decode_v3
    from features.columnar.codec import to_reference
    state = to_reference(decode_v3(data, tz), tz)
    if not with_ids:
        state.event_ids = {}
    return state


def _from_ints(s: UserState, v: list[int], tail: bytes, tz: int, with_ids: bool) -> UserState:
    # slices and zip rather than index arithmetic per value: this runs for every state read
    base = (s.T + tz) // 86400 if s.T >= 0 else 0
    n_days = v[0]
    p = 1
    days = s.days
    for _ in range(n_days):
        d = base - v[p]
        day_start = d * 86400 - tz
        e = p + 2 + 2 * v[p + 1]
        actions = dict(zip(v[p + 2:e:2], v[p + 3:e:2]))
        dwell_ms, dwell_n, nc = v[e], v[e + 1], v[e + 2]
        p = e + 3
        e = p + 3 * nc
        cats = dict(zip(zip(v[p:e:3], v[p + 1:e:3]), v[p + 2:e:3]))
        nr = v[e]
        p = e + 1
        e = p + 2 * nr
        runs = [[f + day_start, f + day_start + n] for f, n in zip(v[p:e:2], v[p + 1:e:2])]
        p = e
        days[d] = DayBucket(actions, dwell_ms, dwell_n, cats, runs)
    ni = v[p]
    p += 1
    ids = list(accumulate(v[p:p + ni]))
    p += ni
    s.items = dict(zip(ids, [base - x for x in v[p:p + ni]]))
    p += ni
    ne = v[p]
    p += 1
    if len(tail) != ne * EVENT_ID_HASH_BYTES or p + ne != len(v):
        raise ValueError("lengths do not match the header")
    if with_ids and ne:
        raw = np.zeros((ne, 8), dtype=np.uint8)
        raw[:, :EVENT_ID_HASH_BYTES] = np.frombuffer(tail, dtype=np.uint8).reshape(ne, -1)
        s.event_ids = dict(zip(raw.view("<u8").ravel().tolist(),
                               [base - x for x in v[p:p + ne]]))
    return s
