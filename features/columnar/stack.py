"""Many users' v3 states stacked into flat arrays, with no Python work per element.

`Stack.from_states` joins the users' records into one buffer (one `bytes.join`, no slice per
section) and reads every section of every user from it with numpy: each section's start in
each record follows from the user's counts and widths (`layout.section_offsets`, as arrays),
and each value is gathered byte by byte at its width. The only Python work per user is
reading its counts. Users keep the caller's order (`order` is the identity).

`Stack.from_states_by_kind` is the former way, kept as its reference: states with the same
action-code columns and widths stacked together, each section joined by one slice per user
(`order` maps a stack position to the caller's index);
tests/unit/features/test_columnar_bulk.py holds the two equal.
Rows (one per user-day), category entries and runs are by user, then day ascending, then (for
entries and runs) in the order the state keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Sequence

import numpy as np

from features.columnar.layout import (
    HEADER_SIZE,
    N_WIDTHS,
    RUN_BYTES,
    RUN_HALF,
    S_ACT,
    S_AGE,
    S_CAT,
    S_DWELL_MS,
    S_DWELL_N,
    S_NCAT,
    S_NITEM,
    S_NRUN,
    S_RUN,
    W_ACT,
    W_CCOUNT,
    W_CKEY,
    W_DWELL_MS,
    W_DWELL_N,
    W_NCAT,
    W_NID,
    W_NITEM,
    W_NRUN,
    ColumnarState,
    StateDecodeError,
)

_I64 = np.int64


def exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), dtype=_I64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _uint_matrix(raw: np.ndarray, w: int) -> np.ndarray:
    """(n, w) bytes -> n unsigned little-endian values as int64."""
    if w == 1:
        return raw[:, 0].astype(_I64)
    if w in (2, 4, 8):
        return np.ascontiguousarray(raw).view(f"<u{w}")[:, 0].astype(_I64)
    wide = np.zeros((len(raw), 8), dtype=np.uint8)
    wide[:, :w] = raw
    return wide.view("<u8")[:, 0].astype(_I64)


def _uints(data: bytes, w: int) -> np.ndarray:
    return _uint_matrix(np.frombuffer(data, dtype=np.uint8).reshape(-1, w), w)


@dataclass
class Stack:
    """The stacked records of U users (N day rows, C category entries, R runs)."""
    U: int
    T: np.ndarray               # [U] the state's T (-1: no event yet)
    base: np.ndarray            # [U] day(T)
    D: np.ndarray               # [U] rows per user
    row_start: np.ndarray       # [U] index of the user's first row
    row_user: np.ndarray        # [N]
    row_day: np.ndarray         # [N]
    row_total: np.ndarray       # [N] events, all action codes
    row_codes: np.ndarray       # [N, len(codes)] events of each asked-for action code
    row_dwell_ms: np.ndarray    # [N]
    row_dwell_n: np.ndarray     # [N]
    row_items: np.ndarray       # [N] items last seen that day
    cat_row: np.ndarray         # [C]
    cat_key: np.ndarray         # [C] k << 8 | action
    cat_count: np.ndarray       # [C]
    run_start: np.ndarray       # [U] index of the user's first run
    run_n: np.ndarray           # [U]
    run_row: np.ndarray         # [R]
    run_first: np.ndarray       # [R] seconds after the day's start
    run_last: np.ndarray        # [R]

    order: np.ndarray           # [U] stack position -> the caller's index

    @classmethod
    def from_states(cls, states: Sequence[ColumnarState], tz: int,
                    codes: Sequence[int]) -> "Stack":
        """Stack decoded v3 states in the caller's order; `codes` are the action codes whose
        per-day counts `row_codes` holds (a config's codes, in its order)."""
        return _stack_bulk(states, tz, codes)

    @classmethod
    def from_states_by_kind(cls, states: Sequence[ColumnarState], tz: int,
                            codes: Sequence[int]) -> "Stack":
        """The reference of `from_states`: users grouped by kind (codes and widths), one slice
        per user and section."""
        kinds: dict[tuple, list[int]] = {}
        for u, s in enumerate(states):
            key = (bytes(s.buf[HEADER_SIZE:HEADER_SIZE + s.A]), *s.w)
            members = kinds.get(key)
            if members is None:
                kinds[key] = [u]
            else:
                members.append(u)
        order: list[int] = []
        parts: dict[str, list[np.ndarray]] = {k: [] for k in (
            "ages", "total", "codes", "dwms", "dwn", "ncat", "nrun", "nitem", "ckey", "ccount",
            "first", "last")}
        for (code_bytes, *w), users in kinds.items():
            order += users
            group = [states[u] for u in users]

            def section(k: int, group: list[ColumnarState] = group) -> bytes:
                return b"".join([g.buf[g.off[k]:g.off[k + 1]] for g in group])

            A = len(code_bytes)
            parts["ages"].append(np.frombuffer(section(S_AGE), dtype=np.uint8))
            act = _uints(section(S_ACT), w[W_ACT]).reshape(-1, A) if A else \
                np.zeros((len(parts["ages"][-1]), 0), dtype=_I64)
            parts["total"].append(act.sum(axis=1))
            cols = [code_bytes.find(bytes((c,))) if 0 <= c < 256 else -1 for c in codes]
            by_code = np.zeros((len(act), len(codes)), dtype=_I64)
            for c, j in enumerate(cols):
                if j >= 0:
                    by_code[:, c] = act[:, j]
            parts["codes"].append(by_code)
            for name, sec, ws in (("dwms", S_DWELL_MS, W_DWELL_MS), ("dwn", S_DWELL_N, W_DWELL_N),
                                  ("ncat", S_NCAT, W_NCAT), ("nrun", S_NRUN, W_NRUN),
                                  ("nitem", S_NITEM, W_NITEM)):
                parts[name].append(_uints(section(sec), w[ws]))
            wk, wc = w[W_CKEY], w[W_CCOUNT]
            entries = np.frombuffer(section(S_CAT), dtype=np.uint8).reshape(-1, wk + wc)
            parts["ckey"].append(_uint_matrix(entries[:, :wk], wk))
            parts["ccount"].append(_uint_matrix(entries[:, wk:], wc))
            run = np.frombuffer(section(S_RUN), dtype=np.uint8).reshape(-1, RUN_BYTES)
            parts["first"].append(_uint_matrix(run[:, :RUN_HALF], RUN_HALF))
            parts["last"].append(_uint_matrix(run[:, RUN_HALF:], RUN_HALF))
        ordered = [states[u] for u in order]
        U = len(ordered)
        counts = np.array([(s.T, s.D, s.C, s.R) for s in ordered], dtype=_I64).reshape(U, 4)
        T, D, C, R = counts.T
        flat = {k: np.concatenate(v) if v else np.zeros(0, dtype=_I64) for k, v in parts.items()
                if k != "codes"}
        row_codes = np.concatenate(parts["codes"]) if parts["codes"] else \
            np.zeros((0, len(codes)), dtype=_I64)
        base = (T + tz) // 86400
        N = int(D.sum())
        row_user = np.repeat(np.arange(U, dtype=_I64), D)
        for name, total in (("ncat", C), ("nrun", R)):
            bad = np.flatnonzero(np.bincount(row_user, weights=flat[name], minlength=U) != total)
            if len(bad):
                raise StateDecodeError(f"corrupt state record (stacked user {int(order[bad[0]])}):"
                                       f" its days' {name} do not add up to its header's count")
        return cls(
            U=U, T=T, base=base, D=D, row_start=exclusive_cumsum(D), row_user=row_user,
            row_day=base[row_user] - flat["ages"], row_total=flat["total"].astype(_I64),
            row_codes=row_codes, row_dwell_ms=flat["dwms"], row_dwell_n=flat["dwn"],
            row_items=flat["nitem"],
            cat_row=np.repeat(np.arange(N, dtype=_I64), flat["ncat"]), cat_key=flat["ckey"],
            cat_count=flat["ccount"], run_start=exclusive_cumsum(R), run_n=R,
            run_row=np.repeat(np.arange(N, dtype=_I64), flat["nrun"]),
            run_first=flat["first"], run_last=flat["last"],
            order=np.asarray(order, dtype=_I64))


# ---------------------------------------------------------------- in bulk

_COUNTS = attrgetter("T", "A", "D", "C", "R")


def _read_width(u8: np.ndarray, pos: np.ndarray, w: int) -> np.ndarray:
    """The w-byte little-endian unsigned values starting at byte positions `pos`."""
    if w == 1:
        return u8.take(pos).astype(_I64)
    full = 2 if w == 2 else 4 if w <= 4 else 8
    wide = np.zeros((len(pos), full), dtype=np.uint8) if full > w else \
        np.empty((len(pos), full), dtype=np.uint8)
    for b in range(w):
        wide[:, b] = u8.take(pos + b if b else pos)
    return wide.view(f"<u{full}")[:, 0].astype(_I64)


def _section(u8: np.ndarray, at: np.ndarray, counts: np.ndarray, stride: np.ndarray,
             fields: Sequence[tuple[np.ndarray | None, np.ndarray]]) -> list[np.ndarray]:
    """Every user's `counts[u]` elements of a section starting at byte `at[u]`, one each
    `stride[u]` bytes; of each element, each of `fields` (skip[u] bytes into the element,
    width[u] bytes wide; skip None: 0), joined in user order."""
    n = int(counts.sum())
    if not n:
        return [np.zeros(0, dtype=_I64) for _ in fields]
    first = exclusive_cumsum(counts)
    s_lo, s_hi = int(stride.min()), int(stride.max())
    owner = None
    if s_lo == s_hi:                    # most often: one width for all the users
        pos = np.repeat(at - first * s_lo, counts)
        pos += np.arange(n, dtype=_I64) * s_lo
    else:
        owner = np.repeat(np.arange(len(counts), dtype=_I64), counts)
        pos = at[owner] + (np.arange(n, dtype=_I64) - first[owner]) * stride[owner]
    out = []
    for skip, width in fields:
        w_lo, w_hi = int(width.min()), int(width.max())
        if skip is not None:
            k_lo, k_hi = int(skip.min()), int(skip.max())
            if k_lo == k_hi:
                p = pos + k_lo
            else:
                if owner is None:
                    owner = np.repeat(np.arange(len(counts), dtype=_I64), counts)
                p = pos + skip[owner]
        else:
            p = pos
        if w_lo == w_hi:
            out.append(_read_width(u8, p, w_lo))
            continue
        if owner is None:
            owner = np.repeat(np.arange(len(counts), dtype=_I64), counts)
        each = width[owner]
        values = np.empty(n, dtype=_I64)
        for w in np.flatnonzero(np.bincount(width, minlength=9)).tolist():
            sel = np.flatnonzero(each == w)
            values[sel] = _read_width(u8, p[sel], w)
        out.append(values)
    return out


def _stack_bulk(states: Sequence[ColumnarState], tz: int, codes: Sequence[int]) -> Stack:
    U = len(states)
    counts = np.fromiter(chain.from_iterable(map(_COUNTS, states)), dtype=_I64,
                         count=U * 5).reshape(U, 5)
    T, A, D, C, R = counts.T
    w = np.fromiter(chain.from_iterable([s.w for s in states]), dtype=_I64,
                    count=U * N_WIDTHS).reshape(U, N_WIDTHS).T      # [10, U]
    bufs = [s.buf for s in states]
    size = np.fromiter(map(len, bufs), dtype=_I64, count=U)
    bufs.append(bytes(8))
    u8 = np.frombuffer(b"".join(bufs), dtype=np.uint8)
    record = exclusive_cumsum(size)
    # each section's start in the joined buffer (layout.section_offsets, per user)
    at_codes = record + HEADER_SIZE
    at_age = at_codes + A
    at_act = at_age + D
    at_dwms = at_act + D * A * w[W_ACT]
    at_dwn = at_dwms + D * w[W_DWELL_MS]
    at_ncat = at_dwn + D * w[W_DWELL_N]
    at_nrun = at_ncat + D * w[W_NCAT]
    at_nitem = at_nrun + D * w[W_NRUN]
    at_cat = at_nitem + D * w[W_NITEM] + D * w[W_NID]
    at_run = at_cat + C * (w[W_CKEY] + w[W_CCOUNT])

    row_start = exclusive_cumsum(D)
    row_user = np.repeat(np.arange(U, dtype=_I64), D)
    N = len(row_user)
    one = np.ones(U, dtype=_I64)
    [ages] = _section(u8, at_age, D, one, [(None, one)])
    [dwms] = _section(u8, at_dwms, D, w[W_DWELL_MS], [(None, w[W_DWELL_MS])])
    [dwn] = _section(u8, at_dwn, D, w[W_DWELL_N], [(None, w[W_DWELL_N])])
    [ncat] = _section(u8, at_ncat, D, w[W_NCAT], [(None, w[W_NCAT])])
    [nrun] = _section(u8, at_nrun, D, w[W_NRUN], [(None, w[W_NRUN])])
    [nitem] = _section(u8, at_nitem, D, w[W_NITEM], [(None, w[W_NITEM])])

    # act: D x A values per user, row-major; row totals by cumulative sums, the configured
    # codes by their column
    [act] = _section(u8, at_act, D * A, w[W_ACT], [(None, w[W_ACT])])
    row_A = A[row_user]
    act_start = exclusive_cumsum(row_A)
    c_act = np.zeros(len(act) + 1, dtype=_I64)
    np.cumsum(act, out=c_act[1:])
    row_total = c_act[act_start + row_A] - c_act[act_start]
    row_codes = np.zeros((N, len(codes)), dtype=_I64)
    maxA = int(A.max()) if U else 0
    if maxA and N and len(codes):
        # each user's column of each asked-for code (-1: none): its bytes [U, maxA], -1 past
        # the user's A
        cols = np.arange(maxA, dtype=_I64)
        code_at = u8[np.minimum(at_codes[:, None] + cols, len(u8) - 1)].astype(_I64)
        code_at[cols >= A[:, None]] = -1
        column = np.full((U, len(codes)), -1, dtype=_I64)
        for c, code in enumerate(codes):
            if 0 <= code < 256:
                hit = code_at == code
                column[:, c] = np.where(hit.any(axis=1), hit.argmax(axis=1), -1)
        col = column[row_user]
        padded = np.append(act, 0)              # a column the user lacks reads the 0 after
        row_codes = padded[np.where(col >= 0, act_start[:, None] + col, len(act))]

    # category entries (key, count) and runs (first, last)
    wk, wc = w[W_CKEY], w[W_CCOUNT]
    cat_key, cat_count = _section(u8, at_cat, C, wk + wc, [(None, wk), (wk, wc)])
    run_start = exclusive_cumsum(R)
    six, three = np.full(U, RUN_BYTES, dtype=_I64), np.full(U, RUN_HALF, dtype=_I64)
    run_first, run_last = _section(u8, at_run, R, six, [(None, three), (three, three)])

    for name, per_day, total in (("ncat", ncat, C), ("nrun", nrun, R)):
        c_day = np.zeros(N + 1, dtype=_I64)
        np.cumsum(per_day, out=c_day[1:])
        bad = np.flatnonzero(c_day[row_start + D] - c_day[row_start] != total)
        if len(bad):
            raise StateDecodeError(f"corrupt state record (stacked user {int(bad[0])}):"
                                   f" its days' {name} do not add up to its header's count")
    base = (T + tz) // 86400
    return Stack(
        U=U, T=T.copy(), base=base, D=D.copy(), row_start=row_start, row_user=row_user,
        row_day=base[row_user] - ages, row_total=row_total, row_codes=row_codes,
        row_dwell_ms=dwms, row_dwell_n=dwn, row_items=nitem,
        cat_row=np.repeat(np.arange(N, dtype=_I64), ncat), cat_key=cat_key,
        cat_count=cat_count, run_start=run_start, run_n=R.copy(),
        run_row=np.repeat(np.arange(N, dtype=_I64), nrun),
        run_first=run_first, run_last=run_last, order=np.arange(U, dtype=_I64))
