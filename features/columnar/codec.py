"""v3 records (features.columnar.layout; format 4 since the hold-back's header fields) to and
from bytes, and to and from the reference state.

`decode` keeps the record's bytes and reads only the header: the sections are views over them.
Only format 4 is read: the earlier formats (v1/v2 of features.encoding, format 3 without the
hold-back's fields) were never deployed.
"""
from __future__ import annotations

import struct

from features.columnar.layout import (
    AGE_BYTE,
    FLAGS_AT,
    FORMAT,
    HASH_BYTES,
    HEADER,
    HEADER_SIZE,
    HELD,
    N_WIDTHS,
    PUBLISHED_AT_AT,
    RUN_BYTES,
    RUN_HALF,
    S_ACT,
    S_CAT,
    S_DWELL_MS,
    S_DWELL_N,
    S_HASH,
    S_ITEM,
    S_NCAT,
    S_NID,
    S_NITEM,
    S_NRUN,
    S_RUN,
    W_ACT,
    W_CCOUNT,
    W_CKEY,
    W_DWELL_MS,
    W_DWELL_N,
    W_ITEM,
    W_NCAT,
    W_NID,
    W_NITEM,
    W_NRUN,
    ColumnarState,
    StateDecodeError,
    section_offsets,
    uint_bytes,
    uint_list,
    width_for,
)
from features.events import day_of
from features.state import DayBucket, UserState

_D_AT = 52          # HEADER: the day count's byte
_I64 = struct.Struct("<q")


def encode(s: ColumnarState) -> bytes:
    """The record's bytes (the header written from the state's fields)."""
    buf = s.buf
    fields = (FORMAT, s.T, s.source_offset, s.version, s.published_digest,
              HELD if s.held else 0, len(buf) - HEADER_SIZE, s.due_day, s.published_as_of,
              s.A, s.D, s.C, s.R, s.I, s.E, *s.w, s.closed_day, s.published_at)
    if type(buf) is bytearray:
        HEADER.pack_into(buf, 0, *fields)
        return bytes(buf)
    return HEADER.pack(*fields) + memoryview(buf)[HEADER_SIZE:]


def decode(data: bytes, tz: int) -> ColumnarState:
    """A format-4 record as views over `data` (its days are absolute: `tz` is not needed, and
    kept in the signature the reference's `features.encoding.decode` shares)."""
    if not data:
        raise StateDecodeError("empty state record")
    v = data[0]
    if v == FORMAT:
        return _decode_v3(data)
    raise _unknown_format(v)


def _unknown_format(v: int) -> StateDecodeError:
    return StateDecodeError(f"unknown state format version {v} (this build reads version "
                            f"{FORMAT})")


def _decode_v3(data: bytes) -> ColumnarState:
    try:
        f = HEADER.unpack_from(data)
    except struct.error:
        raise StateDecodeError("corrupt state record: shorter than its header") from None
    w = list(f[15:25])
    if min(w) < 1 or max(w) > 8:
        raise StateDecodeError(f"corrupt state record: widths {w}")
    s = ColumnarState.__new__(ColumnarState)       # what __init__ does, without the call
    s.buf = data
    (_, s.T, s.source_offset, s.version, s.published_digest, _, body, s.due_day,
     s.published_as_of, A, D, C, R, I, E) = f[:15]
    s.A, s.D, s.C, s.R, s.I, s.E = A, D, C, R, I, E
    s.w = w
    s.closed_day = f[25]
    s.held = bool(f[5] & HELD)
    s.published_at = f[26]
    s.off = off = section_offsets(A, D, C, R, I, E, w)
    if off[-1] != len(data) or body != len(data) - HEADER_SIZE:
        raise StateDecodeError(f"corrupt state record: {len(data)} bytes, the header says "
                               f"{off[-1]}")
    return s


def hold_mark(blob: bytes) -> tuple[bool, int]:
    """(held, published_at ms) from a record's header without decoding it (nothing held: not a
    format-4 record)."""
    if blob[:1] != AGE_BYTE[FORMAT] or len(blob) < HEADER_SIZE:
        return False, 0
    return bool(blob[FLAGS_AT] & HELD), _I64.unpack_from(blob, PUBLISHED_AT_AT)[0]


def has_data(blob: bytes) -> bool:
    """Whether a record holds any day (False for a retired or never-used state)."""
    if blob[:1] != AGE_BYTE[FORMAT]:
        raise _unknown_format(blob[0] if blob else -1)
    return len(blob) > _D_AT and blob[_D_AT] > 0


# ---------------------------------------------------------------- the reference state


def from_reference(ref: UserState, tz: int) -> ColumnarState:
    """The v3 state holding exactly what `ref` holds. ValueError for what no state built by
    `features.state.apply` can hold (an item or event id on a day without data, a day after
    day(T) or more than 255 days before it)."""
    base = day_of(ref.T, tz) if ref.T >= 0 else 0
    days = sorted(ref.days)
    row = {d: i for i, d in enumerate(days)}
    for d in days:
        if not 0 <= base - d <= 255:
            raise ValueError(f"day {d} is not within 255 days before day(T) {base}")
    buckets = [ref.days[d] for d in days]
    codes = sorted({a for b in buckets for a in b.actions})
    if any(not 0 <= a <= 255 for a in codes):
        raise ValueError(f"action codes {codes} are not all within 0..255")
    act = [b.actions.get(a, 0) for b in buckets for a in codes]
    cats = [sorted(((k << 8) | a, n) for (k, a), n in b.cats.items()) for b in buckets]
    runs = []
    for d, b in zip(days, buckets):
        start = d * 86400 - tz
        for first, last in b.runs:
            if not start <= first <= last < start + 86400:
                raise ValueError(f"run {first}..{last} is not inside day {d}")
            runs.append((first - start, last - start))
    items: list[list[int]] = [[] for _ in days]
    for item, d in sorted(ref.items.items()):
        if d not in row:
            raise ValueError(f"item {item} was last seen on day {d}, which holds no data")
        items[row[d]].append(item)
    hashes: list[list[int]] = [[] for _ in days]
    for h, d in sorted(ref.event_ids.items()):
        if d not in row:
            raise ValueError(f"an event id was applied on day {d}, which holds no data")
        hashes[row[d]].append(h)
    cols = {
        W_ACT: act,
        W_DWELL_MS: [b.dwell_ms for b in buckets],
        W_DWELL_N: [b.dwell_n for b in buckets],
        W_NCAT: [len(c) for c in cats],
        W_NRUN: [len(b.runs) for b in buckets],
        W_NITEM: [len(g) for g in items],
        W_NID: [len(g) for g in hashes],
    }
    keys = [k for c in cats for k, _ in c]
    counts = [n for c in cats for _, n in c]
    flat_items = [i for g in items for i in g]
    w = [1] * N_WIDTHS
    for slot, values in (*cols.items(), (W_CKEY, keys), (W_CCOUNT, counts),
                         (W_ITEM, flat_items)):
        w[slot] = width_for(max(values, default=0))
    if any(v < 0 for v in (*keys, *counts, *flat_items, *act, *cols[W_DWELL_MS])):
        raise ValueError("negative counts or ids")
    parts = [bytes(codes), bytes(base - d for d in days)]
    for slot in (W_ACT, W_DWELL_MS, W_DWELL_N, W_NCAT, W_NRUN, W_NITEM, W_NID):
        parts.append(uint_bytes(cols[slot], w[slot]) if cols[slot] else b"")
    parts.append(b"".join(k.to_bytes(w[W_CKEY], "little") + n.to_bytes(w[W_CCOUNT], "little")
                          for k, n in zip(keys, counts)))
    parts.append(b"".join(f.to_bytes(RUN_HALF, "little") + la.to_bytes(RUN_HALF, "little")
                          for f, la in runs))
    parts.append(uint_bytes(flat_items, w[W_ITEM]) if flat_items else b"")
    parts.append(b"".join(h.to_bytes(HASH_BYTES, "little") for g in hashes for h in g))
    buf = bytearray(HEADER_SIZE) + b"".join(parts)
    s = ColumnarState(buf, ref.T, ref.source_offset, ref.version, ref.published_digest,
                      ref.due_day, ref.published_as_of,
                      (len(codes), len(days), len(keys), len(runs), len(flat_items),
                       sum(cols[W_NID])), w, ref.closed_day)
    assert s.off[-1] == len(buf)
    return s


def to_reference(s: ColumnarState, tz: int) -> UserState:
    """The reference state holding exactly what `s` holds."""
    buf, off, w, D, A = s.buf, s.off, s.w, s.D, s.A
    base = s.base_day(tz)
    days = [base - a for a in s.ages()]
    codes = s.codes()
    act = uint_list(buf, off[S_ACT], D * A, w[W_ACT])
    dwell_ms = s.day_column(S_DWELL_MS, W_DWELL_MS)
    dwell_n = s.day_column(S_DWELL_N, W_DWELL_N)
    ncat = s.day_column(S_NCAT, W_NCAT)
    nrun = s.day_column(S_NRUN, W_NRUN)
    nitem = s.day_column(S_NITEM, W_NITEM)
    nid = s.day_column(S_NID, W_NID)
    wk, wc = w[W_CKEY], w[W_CCOUNT]
    es = wk + wc
    cat_raw = buf[off[S_CAT]:off[S_RUN]]
    keys = [int.from_bytes(cat_raw[i * es:i * es + wk], "little") for i in range(s.C)]
    cnts = [int.from_bytes(cat_raw[i * es + wk:(i + 1) * es], "little") for i in range(s.C)]
    out = UserState(T=s.T, source_offset=s.source_offset, version=s.version,
                    published_digest=s.published_digest, due_day=s.due_day,
                    published_as_of=s.published_as_of, closed_day=s.closed_day)
    items = uint_list(buf, off[S_ITEM], s.I, w[W_ITEM])
    hb = buf[off[S_HASH]:off[S_HASH] + s.E * HASH_BYTES]
    hashes = [int.from_bytes(hb[j * HASH_BYTES:(j + 1) * HASH_BYTES], "little")
              for j in range(s.E)]
    c = r = it = h = 0
    ro = off[S_RUN]
    for i, d in enumerate(days):
        start = d * 86400 - tz
        actions = {a: n for a, n in zip(codes, act[i * A:(i + 1) * A]) if n}
        cat = {(k >> 8, k & 255): n for k, n in zip(keys[c:c + ncat[i]], cnts[c:c + ncat[i]])}
        c += ncat[i]
        runs = []
        for j in range(r, r + nrun[i]):
            p = ro + j * RUN_BYTES
            runs.append([start + int.from_bytes(buf[p:p + RUN_HALF], "little"),
                         start + int.from_bytes(buf[p + RUN_HALF:p + RUN_BYTES], "little")])
        r += nrun[i]
        out.days[d] = DayBucket(actions, dwell_ms[i], dwell_n[i], cat, runs)
        for item in items[it:it + nitem[i]]:
            out.items[item] = d
        it += nitem[i]
        for hv in hashes[h:h + nid[i]]:
            out.event_ids[hv] = d
        h += nid[i]
    return out

