"""Events applied to a v3 state in place, with exactly the rules of `features.state.apply`
(and `features.update.apply_events` for a user's micro-batch); tests/unit/features/test_columnar.py
holds the two equal.

The record's bytearray is edited where it stands: a counter is rewritten in its width (the
array is widened when a value outgrows it), an entry is inserted into or deleted from its day's
group, and the offsets of the arrays after it move by the bytes inserted. No step touches more
than the day, the item and the event id at hand, except when T moves to a new day (ages shift,
days that left the window are cut off the front of every array).

The same concept as features/update.py (the per-user reference), on the columnar layout.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from hashlib import blake2b
from itertools import accumulate
from typing import TYPE_CHECKING, Optional

from features.columnar.layout import (
    AGE_BYTE,
    DAY_COLUMNS,
    HASH_BYTES,
    MAX_AGE,
    RUN_BYTES,
    RUN_HALF,
    S_ACT,
    S_AGE,
    S_CAT,
    S_CODES,
    S_DWELL_MS,
    S_DWELL_N,
    S_END,
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
    get_uint,
    put_uint,
    uint_bytes,
    uint_list,
    width_for,
)
from features.events import Event
from features.state import APPLIED, DUPLICATE, TOO_LATE, StateRules

if TYPE_CHECKING:
    from features.profile import Profile
    from features.runtime import FeatureRuntime


def check(s: ColumnarState, day: int, eid_hash: int | None, rules: StateRules) -> str:
    """`features.state.check` on a v3 state: too_late, then duplicate; APPLIED when neither."""
    if s.T >= 0:
        base = (s.T + rules.tz) // 86400
        if day < base - MAX_AGE:
            return TOO_LATE
        if eid_hash is not None and s.E:
            j = _find(s, S_HASH, eid_hash.to_bytes(HASH_BYTES, "little"), HASH_BYTES)
            if j >= 0 and _counts_as_applied(s, j, base):
                return DUPLICATE
    return APPLIED


def _counts_as_applied(s: ColumnarState, j: int, base: int) -> bool:
    """Whether event-id entry j lies inside the 30-day window ending at day `base`."""
    if s.buf[s.off[S_AGE]] <= MAX_AGE:
        return True         # every day the state holds is (as `apply` keeps it)
    return _age_of_entry(s, S_NID, W_NID, j) <= MAX_AGE


def apply(s: ColumnarState, ev: Event, categories: tuple[int, ...], rules: StateRules) -> str:
    """Apply one event in log order: APPLIED, TOO_LATE or DUPLICATE (the state is unchanged
    unless APPLIED). `categories` are the item's category ks at this moment (§1.2).

    The steps are the reference's in another order with the same result: T moves (and old
    days are pruned) before the event's day is filled in, which cannot prune the event's
    own day. This runs for every event of the stream, so the common case (one-byte counts,
    an existing counter, the day's last run) is written out here; the helpers below handle
    the rest (a new day, a new category entry or run, widening, an item seen days before)."""
    tz = rules.tz
    ts = ev.ts
    d = (ts + tz) // 86400
    eid = ev.event_id
    # features.state.event_id_hash, as the 6 little-endian bytes the record keeps
    hb = None if eid is None else \
        blake2b(eid.encode("utf-8", "surrogatepass"), digest_size=HASH_BYTES).digest()
    T = s.T
    off = s.off
    buf = s.buf
    hash_found = False
    if T >= 0:
        base = (T + tz) // 86400
        if d < base - MAX_AGE:
            return TOO_LATE
        if hb is not None and s.E:
            o = off[S_HASH]
            p = buf.find(hb, o)
            while p >= 0 and (p - o) % HASH_BYTES:
                p = buf.find(hb, p + 1)
            if p >= 0:
                if _counts_as_applied(s, (p - o) // HASH_BYTES, base):
                    return DUPLICATE
                hash_found = True
    if type(buf) is not bytearray:
        buf = s.buf = bytearray(buf)
    if ts > T:
        if T >= 0 and d != base and s.D:
            _move_days(s, d - base)
        s.T = ts
        base = d
    age = base - d
    w = s.w
    D = s.D
    if D and buf[off[S_AGE] + D - 1] == age:
        i = D - 1
    else:
        i = _day_row(s, age)
        D = s.D
    last = i == D - 1
    a = ev.action
    # events of (day, action)
    oc = off[S_CODES]
    j = buf.find(AGE_BYTE[a], oc, oc + s.A) if 0 <= a < 256 else -1
    j = _add_action(s, a) if j < 0 else j - oc
    wa = w[W_ACT]
    o = off[S_ACT] + (i * s.A + j) * wa
    if wa == 1 and buf[o] < 255:
        buf[o] += 1
    else:
        _bump_act(s, o, wa)
    dwell = ev.dwell_ms
    if dwell is not None:
        wd = w[W_DWELL_MS]
        o = off[S_DWELL_MS] + i * wd
        v = int.from_bytes(buf[o:o + wd], "little") + dwell
        if v >> (wd << 3):
            _bump_day(s, S_DWELL_MS, W_DWELL_MS, i, dwell)
        else:
            buf[o:o + wd] = v.to_bytes(wd, "little")
        o = off[S_DWELL_N] + i
        if w[W_DWELL_N] == 1 and buf[o] < 255:
            buf[o] += 1
        else:
            _bump_day(s, S_DWELL_N, W_DWELL_N, i, 1)
    if categories:
        wk, wc = w[W_CKEY], w[W_CCOUNT]
        es = wk + wc
        if w[W_NCAT] == 1:
            o = off[S_NCAT]
            n = buf[o + i]
            o0 = off[S_CAT] + (s.C - (n if last else sum(buf[o + i:o + D]))) * es
            o1 = o0 + n * es
        else:
            o0 = o1 = -1
        for k in categories:
            key = (k << 8) | a
            if o0 >= 0 and wc == 1 and not key >> (wk << 3):
                kb = key.to_bytes(wk, "little")
                p = buf.find(kb, o0, o1)
                while p >= 0 and (p - o0) % es:
                    p = buf.find(kb, p + 1, o1)
                if p >= 0:
                    if buf[p + wk] < 255:
                        buf[p + wk] += 1
                        continue
                elif buf[off[S_NCAT] + i] < 255:
                    # a new (category, action) of the day, in key order
                    at = o0
                    if wk == 2:                 # (k < 256: the usual case) no slices
                        while at < o1 and buf[at] | buf[at + 1] << 8 < key:
                            at += es
                    else:
                        while at < o1 and int.from_bytes(buf[at:at + wk], "little") < key:
                            at += es
                    buf[at:at] = kb + b"\x01"
                    for x in range(S_RUN, S_END + 1):
                        off[x] += es
                    o1 += es
                    s.C += 1
                    buf[off[S_NCAT] + i] += 1
                    continue
            _bump_cat(s, i, key)
            o0 = o1 = -1                    # the group may have moved: no more shortcuts
    t = ts - (d * 86400 - tz)
    o = off[S_NRUN] + i
    if w[W_NRUN] == 1 and buf[o]:
        # the common case, t after the start of the day's last run: only that run can change
        n = buf[o]
        start = s.R - (n if last else sum(buf[o:off[S_NRUN] + D]))
        o = off[S_RUN] + (start + n - 1) * RUN_BYTES
        # the run's 3-byte first and last, byte by byte (no slices: this runs per event)
        if t > buf[o] | buf[o + 1] << 8 | buf[o + 2] << 16:
            end = buf[o + 3] | buf[o + 4] << 8 | buf[o + 5] << 16
            if end < t:
                if t - end <= rules.gap:
                    buf[o + 3] = t & 255
                    buf[o + 4] = t >> 8 & 255
                    buf[o + 5] = t >> 16
                else:
                    _insert_run(s, i, o + RUN_BYTES, t)
        else:
            _add_time(s, i, t, rules.gap)
    else:
        _add_time(s, i, t, rules.gap)
    item = ev.item_id
    if item >> (w[W_ITEM] << 3):
        _widen_items(s, width_for(item))
    wi = w[W_ITEM]
    kb = item.to_bytes(wi, "little")
    # the item: nothing when seen on this day or a later one, else into this day's group
    o = off[S_ITEM]
    p = buf.find(kb, o, off[S_HASH])
    while p >= 0 and (p - o) % wi:
        p = buf.find(kb, p + 1, off[S_HASH])
    on = off[S_NITEM] + i
    if last and w[W_NITEM] == 1 and buf[on] < 255:
        end = off[S_HASH]                           # the end of the last day's group
        if p < 0:
            buf[end:end] = kb
            off[S_HASH] = end + wi
            off[S_END] += wi
            s.I += 1
            buf[on] += 1
        elif (p - o) // wi < s.I - buf[on]:
            # last seen on an earlier day: moved to the end of this day's group
            on0 = off[S_NITEM]
            r = bisect_right(list(accumulate(buf[on0:on0 + D])), (p - o) // wi)
            buf[p:end] = buf[p + wi:end] + kb
            buf[off[S_NITEM] + r] -= 1
            buf[on] += 1
    else:
        _touch(s, S_ITEM, S_NITEM, W_NITEM, i, kb, wi, p >= 0)
    if hb is not None:
        o = off[S_NID] + i
        if last and w[W_NID] == 1 and not hash_found and buf[o] < 255:
            buf += hb                               # the end of the last day's group
            off[S_END] += HASH_BYTES
            s.E += 1
            buf[o] += 1
        else:
            _touch(s, S_HASH, S_NID, W_NID, i, hb, HASH_BYTES, hash_found)
    return APPLIED


def _bump_act(s: ColumnarState, o: int, wa: int) -> None:
    buf = s.writable()
    v = get_uint(buf, o, wa) + 1
    if v >> (wa << 3):
        rel = (o - s.off[S_ACT]) // wa
        _widen_act(s, width_for(v))
        wa = s.w[W_ACT]
        o = s.off[S_ACT] + rel * wa
    put_uint(buf, o, wa, v)


# ---------------------------------------------------------------- a user's micro-batch


@dataclass(slots=True)
class ColumnarUpdate:
    """`features.update.UserUpdate` for a v3 state. `closing` holds, for each day an applied
    event closed, a copy of the state before that event; `features.columnar.evaluate.finish`
    turns them into `closed_days` and evaluates `profile` together with other users'."""
    user_id: int
    state: ColumnarState
    evaluate: bool = True
    applied: int = 0
    duplicates: int = 0
    redelivered: int = 0
    too_late: list[tuple[int, Event]] = field(default_factory=list)
    closing: list[tuple[int, ColumnarState]] = field(default_factory=list)
    closed_days: list[tuple[int, dict]] = field(default_factory=list)
    profile: Optional["Profile"] = None
    changed: bool = False
    held: bool = False          # no events: a held profile going out (features.holdback)

    @property
    def touched(self) -> bool:
        """Whether the state must be written back."""
        return self.applied > 0 or self.duplicates > 0 or self.redelivered > 0 or \
            bool(self.too_late) or self.held

    @property
    def wants_profile(self) -> bool:
        return self.evaluate and not self.state.empty and \
            (self.applied > 0 or self.redelivered > 0 or self.held)


def apply_events(rt: "FeatureRuntime", user_id: int, state: ColumnarState,
                 events: list[tuple[int, Event]], evaluate: bool = True) -> ColumnarUpdate:
    """`features.update.apply_events` without the evaluation: (offset, event) pairs in offset
    order; a redelivered offset (<= the state's) is skipped and counted."""
    up = ColumnarUpdate(user_id, state, evaluate)
    tz = rt.engine.tz
    rules = rt.engine.rules
    categories = rt.catalog.categories
    for offset, ev in events:
        if offset <= state.source_offset:
            up.redelivered += 1
            continue
        snap = None
        if evaluate and state.T >= 0 and (ev.ts + tz) // 86400 > (state.T + tz) // 86400 and \
                (state.T + tz) // 86400 > state.closed_day and state.D:
            # the day's window as it closes: before the event (not a day a scheduled run
            # already closed, nor a retired state's)
            snap = state.copy()
        outcome = apply(state, ev, categories(ev.item_id), rules)
        state.source_offset = offset
        if outcome == APPLIED:
            up.applied += 1
            if snap is not None:
                up.closing.append(((snap.T + tz) // 86400, snap))
                state.closed_day = (snap.T + tz) // 86400
        elif outcome == DUPLICATE:
            up.duplicates += 1
        else:
            up.too_late.append((offset, ev))
    return up


# ---------------------------------------------------------------- in-place edits


def _shift(s: ColumnarState, sec: int, n: int) -> None:
    off = s.off
    for j in range(sec + 1, S_END + 1):
        off[j] += n


def _suffix(s: ColumnarState, sec: int, ws: int, i: int) -> int:
    """Sum of a per-day column over rows i.. (the entries of the grouped array from row i)."""
    w = s.w[ws]
    o = s.off[sec]
    if w == 1:
        return sum(s.buf[o + i:o + s.D])
    return sum(uint_list(s.buf, o + i * w, s.D - i, w))


def _day_count(s: ColumnarState, sec: int, ws: int, i: int) -> int:
    w = s.w[ws]
    o = s.off[sec] + i * w
    return s.buf[o] if w == 1 else int.from_bytes(s.buf[o:o + w], "little")


def _bump_day(s: ColumnarState, sec: int, ws: int, i: int, delta: int) -> None:
    buf = s.writable()
    w = s.w[ws]
    o = s.off[sec] + i * w
    v = (buf[o] if w == 1 else int.from_bytes(buf[o:o + w], "little")) + delta
    if v >> (w << 3):
        values = uint_list(buf, s.off[sec], s.D, w)
        values[i] = v
        s.w[ws] = width_for(v)
        buf[s.off[sec]:s.off[sec + 1]] = uint_bytes(values, s.w[ws])
        s.reset_offsets()
        return
    put_uint(buf, o, w, v)


def _find(s: ColumnarState, sec: int, kb: bytes, es: int) -> int:
    """Index of the entry whose bytes are kb in a section of es-byte entries, or -1."""
    buf = s.writable()
    o, end = s.off[sec], s.off[sec + 1]
    p = buf.find(kb, o, end)
    while p >= 0 and (p - o) % es:
        p = buf.find(kb, p + 1, end)
    return -1 if p < 0 else (p - o) // es


def _row_of_entry(s: ColumnarState, nsec: int, nws: int, j: int) -> int:
    """The row whose group holds entry j of a grouped array."""
    r = bisect_right(list(accumulate(uint_list(s.buf, s.off[nsec], s.D, s.w[nws]))), j)
    if r >= s.D:
        raise AssertionError("entry beyond its groups")
    return r


def _age_of_entry(s: ColumnarState, nsec: int, nws: int, j: int) -> int:
    return s.buf[s.off[S_AGE] + _row_of_entry(s, nsec, nws, j)]


def _touch(s: ColumnarState, sec: int, nsec: int, nws: int, i: int, kb: bytes, es: int,
           maybe_present: bool) -> None:
    """Put the key kb in row i's group unless it is already in that row or a later one (the
    max-day rule of items and event ids)."""
    buf = s.writable()
    total = s.I if sec == S_ITEM else s.E
    start = total - _suffix(s, nsec, nws, i)
    if maybe_present:
        j = _find(s, sec, kb, es)
        if j >= 0:
            if j >= start:
                return                       # seen on this day or a later one
            r = _row_of_entry(s, nsec, nws, j)
            at = s.off[sec] + j * es
            del buf[at:at + es]
            _shift(s, sec, -es)
            total -= 1
            start -= 1
            _bump_day(s, nsec, nws, r, -1)
    at = s.off[sec] + (start + _day_count(s, nsec, nws, i)) * es
    buf[at:at] = kb
    _shift(s, sec, es)
    if sec == S_ITEM:
        s.I = total + 1
    else:
        s.E = total + 1
    _bump_day(s, nsec, nws, i, 1)


def _bump_cat(s: ColumnarState, i: int, key: int) -> None:
    if key >> (s.w[W_CKEY] << 3):
        _widen_cats(s, width_for(key), s.w[W_CCOUNT])
    buf = s.writable()
    wk, wc = s.w[W_CKEY], s.w[W_CCOUNT]
    es = wk + wc
    o0 = s.off[S_CAT] + (s.C - _suffix(s, S_NCAT, W_NCAT, i)) * es
    o1 = o0 + _day_count(s, S_NCAT, W_NCAT, i) * es
    kb = key.to_bytes(wk, "little")
    p = buf.find(kb, o0, o1)
    while p >= 0 and (p - o0) % es:
        p = buf.find(kb, p + 1, o1)
    if p >= 0:
        o = p + wk
        v = (buf[o] if wc == 1 else int.from_bytes(buf[o:o + wc], "little")) + 1
        if v >> (wc << 3):
            _widen_cats(s, wk, width_for(v))
            _bump_cat(s, i, key)
            return
        put_uint(buf, o, wc, v)
        return
    at = o0
    while at < o1 and int.from_bytes(buf[at:at + wk], "little") < key:
        at += es
    buf[at:at] = kb + (1).to_bytes(wc, "little")
    _shift(s, S_CAT, es)
    s.C += 1
    _bump_day(s, S_NCAT, W_NCAT, i, 1)


def _add_time(s: ColumnarState, i: int, t: int, gap: int) -> None:
    """`features.state.add_timestamp` on row i's runs (seconds after the day's start)."""
    buf = s.writable()
    n = _day_count(s, S_NRUN, W_NRUN, i)
    o0 = s.off[S_RUN] + (s.R - _suffix(s, S_NRUN, W_NRUN, i)) * RUN_BYTES
    if n:
        # the common case, t after the start of the day's last run: only that run can change
        o = o0 + (n - 1) * RUN_BYTES
        first = int.from_bytes(buf[o:o + RUN_HALF], "little")
        if t > first:
            last = int.from_bytes(buf[o + RUN_HALF:o + RUN_BYTES], "little")
            if last >= t:
                return
            if t - last <= gap:
                buf[o + RUN_HALF:o + RUN_BYTES] = t.to_bytes(RUN_HALF, "little")
                return
            _insert_run(s, i, o + RUN_BYTES, t)
            return
    runs = [(int.from_bytes(buf[o:o + RUN_HALF], "little"),
             int.from_bytes(buf[o + RUN_HALF:o + RUN_BYTES], "little"))
            for o in range(o0, o0 + n * RUN_BYTES, RUN_BYTES)]
    k = bisect_left(runs, (t, t))
    if k > 0 and runs[k - 1][1] >= t:
        return                              # inside an existing run
    joins_prev = k > 0 and t - runs[k - 1][1] <= gap
    joins_next = k < n and runs[k][0] - t <= gap
    tb = t.to_bytes(RUN_HALF, "little")
    if joins_prev and joins_next:
        o = o0 + (k - 1) * RUN_BYTES + RUN_HALF
        buf[o:o + RUN_HALF] = buf[o + RUN_BYTES:o + RUN_BYTES + RUN_HALF]
        at = o0 + k * RUN_BYTES
        del buf[at:at + RUN_BYTES]
        _shift(s, S_RUN, -RUN_BYTES)
        s.R -= 1
        _bump_day(s, S_NRUN, W_NRUN, i, -1)
    elif joins_prev:
        o = o0 + (k - 1) * RUN_BYTES + RUN_HALF
        buf[o:o + RUN_HALF] = tb
    elif joins_next:
        o = o0 + k * RUN_BYTES
        buf[o:o + RUN_HALF] = tb
    else:
        _insert_run(s, i, o0 + k * RUN_BYTES, t)


def _insert_run(s: ColumnarState, i: int, at: int, t: int) -> None:
    tb = t.to_bytes(RUN_HALF, "little")
    s.writable()[at:at] = tb + tb
    _shift(s, S_RUN, RUN_BYTES)
    s.R += 1
    _bump_day(s, S_NRUN, W_NRUN, i, 1)


def _day_row(s: ColumnarState, age: int) -> int:
    """The row of the day `age` days before day(T), inserted (all zero) when missing."""
    buf = s.writable()
    oa = s.off[S_AGE]
    D = s.D
    if D and buf[oa + D - 1] == age:
        return D - 1
    p = buf.find(AGE_BYTE[age], oa, oa + D)
    if p >= 0:
        return p - oa
    i = 0
    while i < D and buf[oa + i] > age:
        i += 1
    off, w = s.off, s.w
    for sec, ws in reversed(DAY_COLUMNS):     # back to front: earlier offsets stay valid
        at = off[sec] + i * w[ws]
        buf[at:at] = bytes(w[ws])
    at = off[S_ACT] + i * s.A * w[W_ACT]
    buf[at:at] = bytes(s.A * w[W_ACT])
    buf[oa + i:oa + i] = AGE_BYTE[age]
    s.D += 1
    s.reset_offsets()
    return i


def _add_action(s: ColumnarState, a: int) -> int:
    """A column for action code a (all zero); returns its index."""
    if not 0 <= a <= 255:
        raise ValueError(f"action code {a} is outside 0..255")
    codes = s.codes()
    j = bisect_left(codes, a)
    A, D, w = s.A, s.D, s.w[W_ACT]
    flat = uint_list(s.buf, s.off[S_ACT], D * A, w)
    rows = [flat[r * A:r * A + j] + [0] + flat[r * A + j:(r + 1) * A] for r in range(D)]
    buf = s.writable()
    buf[s.off[S_ACT]:s.off[S_ACT + 1]] = uint_bytes(
        [v for row in rows for v in row], w) if D else b""
    oc = s.off[S_CODES]
    buf[oc + j:oc + j] = AGE_BYTE[a]
    s.A += 1
    s.reset_offsets()
    return j


def _widen_act(s: ColumnarState, w: int) -> None:
    values = uint_list(s.buf, s.off[S_ACT], s.D * s.A, s.w[W_ACT])
    s.writable()[s.off[S_ACT]:s.off[S_ACT + 1]] = uint_bytes(values, w)
    s.w[W_ACT] = w
    s.reset_offsets()


def _widen_items(s: ColumnarState, w: int) -> None:
    values = uint_list(s.buf, s.off[S_ITEM], s.I, s.w[W_ITEM])
    s.writable()[s.off[S_ITEM]:s.off[S_ITEM + 1]] = uint_bytes(values, w) if values else b""
    s.w[W_ITEM] = w
    s.reset_offsets()


def _widen_cats(s: ColumnarState, wk: int, wc: int) -> None:
    buf = s.writable()
    owk, owc = s.w[W_CKEY], s.w[W_CCOUNT]
    es = owk + owc
    o = s.off[S_CAT]
    raw = buf[o:s.off[S_CAT + 1]]
    out = b"".join(int.from_bytes(raw[p:p + owk], "little").to_bytes(wk, "little") +
                   int.from_bytes(raw[p + owk:p + es], "little").to_bytes(wc, "little")
                   for p in range(0, len(raw), es))
    buf[o:s.off[S_CAT + 1]] = out
    s.w[W_CKEY], s.w[W_CCOUNT] = wk, wc
    s.reset_offsets()


# _AGES_PLUS[k] maps each age byte a to a + k (bytes.translate: no Python loop per day)
_AGES_PLUS = [bytes(min(a + k, 255) for a in range(256)) for k in range(MAX_AGE + 1)]


def _move_days(s: ColumnarState, k: int) -> None:
    """day(T) moves k > 0 days on: every age grows by k, and the days that leave the 30-day
    window (a prefix of the rows) are cut from every array (features.state.prune)."""
    buf = s.writable()
    oa = s.off[S_AGE]
    ages = buf[oa:oa + s.D]
    p = 0
    while p < s.D and ages[p] + k > MAX_AGE:
        p += 1
    if p:
        off, w = s.off, s.w
        cut = {nsec: sum(uint_list(buf, off[nsec], p, w[nws]))
               for nsec, nws in ((S_NCAT, W_NCAT), (S_NRUN, W_NRUN), (S_NITEM, W_NITEM),
                                 (S_NID, W_NID))}
        spans = [(off[S_HASH], cut[S_NID] * HASH_BYTES),
                 (off[S_ITEM], cut[S_NITEM] * w[W_ITEM]),
                 (off[S_RUN], cut[S_NRUN] * RUN_BYTES),
                 (off[S_CAT], cut[S_NCAT] * (w[W_CKEY] + w[W_CCOUNT]))]
        spans += [(off[sec], p * w[ws]) for sec, ws in reversed(DAY_COLUMNS)]
        spans += [(off[S_ACT], p * s.A * w[W_ACT]), (off[S_AGE], p)]
        for at, n in spans:                  # back to front
            del buf[at:at + n]
        s.D -= p
        s.C -= cut[S_NCAT]
        s.R -= cut[S_NRUN]
        s.I -= cut[S_NITEM]
        s.E -= cut[S_NID]
        s.reset_offsets()
    if s.D:                 # every age left is <= MAX_AGE - k: k < MAX_AGE
        oa = s.off[S_AGE]
        buf[oa:oa + s.D] = ages[p:].translate(_AGES_PLUS[k])
