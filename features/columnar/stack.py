"""Many users' v3 states stacked into flat arrays, with no Python work per element.

States with the same action-code columns and the same widths (a handful of kinds: most users
share one) are stacked together: each of their sections is joined into one buffer and read as
one array (`np.frombuffer`), the per-day rows reshaped to [rows, action codes]. The stack holds
the users grouped that way; `order` maps a stack position to the caller's index.
Rows (one per user-day), category entries and runs are by user, then day ascending, then (for
entries and runs) in the order the state keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from features.columnar.layout import (
    HEADER_SIZE,
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
    W_NITEM,
    W_NRUN,
    ColumnarState,
)
from features.encoding import StateDecodeError

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
        """Stack decoded v3 states; `codes` are the action codes whose per-day counts
        `row_codes` holds (a config's codes, in its order)."""
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
