"""Compact binary encoding of `UserState` (never JSON, never pickle).

Layout v1:  header (version, T, source offset, version counter, digest, width, length of Z)
            | Z = zlib(integer array) | event-id hashes
The array holds every other number of the state, days and times relative to day(T) so that most
are small; it is stored in the narrowest little-endian integer width that fits (1, 2, 4 or 8
bytes) and byte-shuffled. The 48-bit event-id hashes are random, so they follow uncompressed, 6 bytes each, in the
order of the array's event-id entries.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from features.state import EVENT_ID_HASH_BYTES, DayBucket, UserState

FORMAT_VERSION = 1
_HEAD = struct.Struct("<BqqqqBI")
_WIDTHS = {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}


class StateDecodeError(ValueError):
    pass


def encode(state: UserState, tz: int) -> bytes:
    if state.T < 0:
        base = 0
    else:
        base = (state.T + tz) // 86400
    out: list[int] = [len(state.days)]
    for d in sorted(state.days):
        b = state.days[d]
        day_start = d * 86400 - tz
        out += [base - d, len(b.actions)]
        for a in sorted(b.actions):
            out += [a, b.actions[a]]
        out += [b.dwell_ms, b.dwell_n, len(b.cats)]
        for (k, a) in sorted(b.cats):
            out += [k, a, b.cats[(k, a)]]
        out.append(len(b.runs))
        for first, last in b.runs:
            out += [first - day_start, last - first]
    items = sorted(state.items)
    out.append(len(items))
    prev = 0
    for i in items:
        out.append(i - prev)
        prev = i
    out += [base - state.items[i] for i in items]
    hashes = sorted(state.event_ids)
    out.append(len(hashes))
    out += [base - state.event_ids[h] for h in hashes]
    arr = np.asarray(out, dtype="<i8")
    lo, hi = (int(arr.min()), int(arr.max())) if len(arr) else (0, 0)
    width = next(w for w in (1, 2, 4, 8) if -(2 ** (8 * w - 1)) <= lo and hi < 2 ** (8 * w - 1))
    # byte-shuffled: every value's low byte first, then the next byte of each... (high bytes are
    # mostly zero and compress to almost nothing)
    shuffled = arr.astype(_WIDTHS[width]).view(np.uint8).reshape(-1, width).T.tobytes()
    body = zlib.compress(shuffled, 9)
    tail = b"".join(h.to_bytes(EVENT_ID_HASH_BYTES, "little") for h in hashes)
    head = _HEAD.pack(FORMAT_VERSION, state.T, state.source_offset, state.version,
                      state.published_digest, width, len(body))
    return head + body + tail


def decode(data: bytes, tz: int) -> UserState:
    if not data:
        raise StateDecodeError("empty state record")
    if data[0] != FORMAT_VERSION:
        raise StateDecodeError(f"unknown state format version {data[0]} (this build reads "
                               f"version {FORMAT_VERSION})")
    try:
        _, T, offset, version, digest, width, n = _HEAD.unpack_from(data)
        body = zlib.decompress(data[_HEAD.size:_HEAD.size + n])
        planes = np.frombuffer(body, dtype=np.uint8).reshape(width, -1)
        v = np.ascontiguousarray(planes.T).view(_WIDTHS[width]).ravel().tolist()
        tail = data[_HEAD.size + n:]
        state = UserState(T=T, source_offset=offset, version=version, published_digest=digest)
        return _from_ints(state, v, tail, tz)
    except (struct.error, zlib.error, IndexError, ValueError, KeyError) as e:
        raise StateDecodeError(f"corrupt state record: {e}") from None


def _from_ints(s: UserState, v: list[int], tail: bytes, tz: int) -> UserState:
    base = (s.T + tz) // 86400 if s.T >= 0 else 0
    n_days = v[0]
    p = 1
    for _ in range(n_days):
        d = base - v[p]
        day_start = d * 86400 - tz
        na = v[p + 1]
        p += 2
        actions = {v[p + 2 * j]: v[p + 2 * j + 1] for j in range(na)}
        p += 2 * na
        dwell_ms, dwell_n, nc = v[p], v[p + 1], v[p + 2]
        p += 3
        cats = {(v[p + 3 * j], v[p + 3 * j + 1]): v[p + 3 * j + 2] for j in range(nc)}
        p += 3 * nc
        nr = v[p]
        p += 1
        runs = []
        for j in range(nr):
            first = v[p + 2 * j] + day_start
            runs.append([first, first + v[p + 2 * j + 1]])
        p += 2 * nr
        s.days[d] = DayBucket(actions, dwell_ms, dwell_n, cats, runs)
    ni = v[p]
    p += 1
    ids, acc = [], 0
    for j in range(ni):
        acc += v[p + j]
        ids.append(acc)
    p += ni
    s.items = {i: base - v[p + j] for j, i in enumerate(ids)}
    p += ni
    ne = v[p]
    p += 1
    w = EVENT_ID_HASH_BYTES
    if len(tail) != ne * w or p + ne != len(v):
        raise ValueError("lengths do not match the header")
    s.event_ids = {int.from_bytes(tail[j * w:(j + 1) * w], "little"): base - v[p + j]
                   for j in range(ne)}
    return s
