"""The v3 state layout: one user's state as a fixed header and thirteen fixed-width arrays.

Every array is little-endian and unsigned; an array of counters is stored in the narrowest
width (1-8 bytes) its largest value needs, and the header names each width. Days are kept as
*ages*: ``age = day(T) - day``, 0..29 (the state never holds a day outside the 30-day window
ending at day(T): `apply` prunes when T moves to a new day).

    header (91 bytes, `HEADER`): the fields of the earlier v2 header where it had them (format 4, T,
        source offset, publish version, published digest, flags, [body length], due day,
        published as_of), then A (action codes), D (days), C (category entries), R (session
        runs), I (items), E (event ids), the widths of the ten variable-width arrays, the
        closed day (the last day whose `profile-aggregates` record was published), and the
        wall-clock time of the last event publish in ms (`published_at`, 0: none recorded).
        Flag bit 0 (`HELD`): a changed profile is held back (`real_time_update.update_interval`,
        features.holdback) and goes out at published_at + the interval. (Format 3, never
        deployed, had no published_at; it is no longer read.)
    codes    A x u8          the action codes that have a column, ascending
    age      D x u8          one row per day with data, ages descending (days ascending)
    act      D x A counters  events per (day, action code column), row-major
    dwell_ms D counters      dwell sum in ms of the day's events that carry one
    dwell_n  D counters      how many of them
    ncat, nrun, nitem, nid   D counters each: the day's entries in the four grouped arrays below
    cat      C entries       (key = k << 8 | action, count), grouped by day, keys ascending
    run      R x 6 bytes     (first, last) seconds after the day's start, 3 bytes each; runs of
                             timestamps whose gaps are <= the session gap, grouped by day, sorted
    item     I ids           item ids grouped by the last day each was seen (order inside a group
                             is arrival order)
    hash     E x 6 bytes     48-bit event-id hashes grouped by the day they were applied

The day an item or event id belongs to is its group's row, so only the per-day counts say it:
pruning a day drops a prefix of every grouped array, and `unique_items` of a window is a sum of
per-day counts. Everything a profile reads lies before `item`; items and hashes are read only
to apply events.
"""
from __future__ import annotations

import struct
from typing import Union

import numpy as np

FORMAT = 4
HEADER = struct.Struct("<BqqqqBIiqHBIIII10Biq")
HEADER_SIZE = HEADER.size      # 91
CLOSED_DAY_AT = 79             # the closed day's i32 (read and patched in place, as the due day)
FLAGS_AT = 33                  # the flags byte
HELD = 1                       # flag: a changed profile is held back
PUBLISHED_AT_AT = 83           # published_at's i64 (format 4)
NO_CLOSED_DAY = -1             # features.state.NO_CLOSED_DAY

# the ten variable widths, in header order
(W_ACT, W_DWELL_MS, W_DWELL_N, W_NCAT, W_NRUN, W_NITEM, W_NID, W_CKEY, W_CCOUNT,
 W_ITEM) = range(10)
N_WIDTHS = 10

# the arrays ("sections"), in body order
(S_CODES, S_AGE, S_ACT, S_DWELL_MS, S_DWELL_N, S_NCAT, S_NRUN, S_NITEM, S_NID, S_CAT, S_RUN,
 S_ITEM, S_HASH, S_END) = range(14)

# per-day counter columns: (section, width slot)
DAY_COLUMNS = ((S_DWELL_MS, W_DWELL_MS), (S_DWELL_N, W_DWELL_N), (S_NCAT, W_NCAT),
               (S_NRUN, W_NRUN), (S_NITEM, W_NITEM), (S_NID, W_NID))
RUN_BYTES = 6                  # first, last: 3 bytes each (a day has 86,400 seconds)
RUN_HALF = 3
HASH_BYTES = 6                 # features.state.EVENT_ID_HASH_BYTES
MAX_AGE = 29                   # features.state.STATE_DAYS - 1
AGE_BYTE = [bytes((i,)) for i in range(256)]


class StateDecodeError(ValueError):
    """A stored record that is not a state this build reads (unknown format, or corrupt)."""


Buffer = Union[bytes, bytearray]


def width_for(value: int) -> int:
    """Bytes an unsigned value needs (at least 1)."""
    return max(1, (value.bit_length() + 7) >> 3)


def section_offsets(A: int, D: int, C: int, R: int, I: int, E: int, w: list[int]) -> list[int]:
    """Absolute start of each section in the record (14 entries; the last is the end)."""
    p1 = HEADER_SIZE + A
    p2 = p1 + D
    p3 = p2 + D * A * w[0]
    p4 = p3 + D * w[1]
    p5 = p4 + D * w[2]
    p6 = p5 + D * w[3]
    p7 = p6 + D * w[4]
    p8 = p7 + D * w[5]
    p9 = p8 + D * w[6]
    p10 = p9 + C * (w[7] + w[8])
    p11 = p10 + R * RUN_BYTES
    p12 = p11 + I * w[9]
    return [HEADER_SIZE, p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p12 + E * HASH_BYTES]


def get_uint(buf: Buffer, o: int, w: int) -> int:
    if w == 1:
        return buf[o]
    return int.from_bytes(buf[o:o + w], "little")


def put_uint(buf: bytearray, o: int, w: int, v: int) -> None:
    if w == 1:
        buf[o] = v
    else:
        buf[o:o + w] = v.to_bytes(w, "little")


def uint_list(buf: Buffer, o: int, n: int, w: int) -> list[int]:
    """n unsigned values of width w from offset o, as Python ints."""
    if w == 1:
        return list(buf[o:o + n])
    return uints(buf[o:o + n * w], w).tolist()


def uints(raw: Buffer | np.ndarray, w: int) -> np.ndarray:
    """Unsigned little-endian values of width w (1-8 bytes) as int64 (item ids < 2^63)."""
    a = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw
    if w in (1, 2, 4, 8):
        return a.view(f"<u{w}").astype(np.int64)
    n = len(a) // w
    wide = np.zeros((n, 8), dtype=np.uint8)
    wide[:, :w] = a.reshape(n, w)
    return wide.view("<u8").ravel().astype(np.int64)


def uint_bytes(values: np.ndarray | list[int], w: int) -> bytes:
    """values (each < 2^(8w)) as w-byte little-endian unsigned."""
    a = np.asarray(values, dtype=np.uint64)
    if w in (1, 2, 4, 8):
        return a.astype(f"<u{w}").tobytes()
    return a.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :w].tobytes()


class ColumnarState:
    """A decoded v3 state: the record's bytes (`buf`, read-only `bytes` until the first change,
    then a `bytearray` edited in place) with the header's fields as attributes and each
    section's offset in `off`. The header bytes inside `buf` are stale between changes;
    `features.columnar.codec.encode` writes them."""

    __slots__ = ("buf", "T", "source_offset", "version", "published_digest", "due_day",
                 "published_as_of", "closed_day", "published_at", "held", "A", "D", "C", "R",
                 "I", "E", "w", "off")

    def __init__(self, buf: Buffer, T: int, source_offset: int, version: int,
                 published_digest: int, due_day: int, published_as_of: int,
                 counts: tuple[int, int, int, int, int, int], widths: list[int],
                 closed_day: int = NO_CLOSED_DAY, published_at: int = 0, held: bool = False):
        self.buf = buf
        self.T = T
        self.source_offset = source_offset
        self.version = version
        self.published_digest = published_digest
        self.due_day = due_day
        self.published_as_of = published_as_of
        self.closed_day = closed_day
        self.published_at = published_at    # wall-clock ms of the last event publish (0: none)
        self.held = held                    # a changed profile waits for published_at + S
        self.A, self.D, self.C, self.R, self.I, self.E = counts
        self.w = widths
        self.off = section_offsets(*counts, widths)

    @classmethod
    def new(cls) -> "ColumnarState":
        """The state of a user with no events (as `features.state.UserState()`)."""
        return cls(bytearray(HEADER_SIZE), -1, -1, 0, 0, -2, -1, (0, 0, 0, 0, 0, 0),
                   [1] * N_WIDTHS)

    @property
    def empty(self) -> bool:
        return self.T < 0

    def counts(self) -> tuple[int, int, int, int, int, int]:
        return self.A, self.D, self.C, self.R, self.I, self.E

    def copy(self) -> "ColumnarState":
        return ColumnarState(bytes(self.buf), self.T, self.source_offset, self.version,
                             self.published_digest, self.due_day, self.published_as_of,
                             self.counts(), list(self.w), self.closed_day, self.published_at,
                             self.held)

    def writable(self) -> bytearray:
        """The buffer, made a private bytearray on the first change."""
        buf = self.buf
        if type(buf) is not bytearray:
            buf = self.buf = bytearray(buf)
        return buf

    def reset_offsets(self) -> None:
        """Recompute `off` in place (callers may hold the list)."""
        self.off[:] = section_offsets(self.A, self.D, self.C, self.R, self.I, self.E, self.w)

    # ---- reading (Python values; for conversions, summaries and the rare paths of apply)

    def ages(self) -> list[int]:
        o = self.off[S_AGE]
        return list(self.buf[o:o + self.D])

    def base_day(self, tz: int) -> int:
        """day(T), the day ages count back from."""
        return (self.T + tz) // 86400

    def day_column(self, sec: int, wslot: int) -> list[int]:
        return uint_list(self.buf, self.off[sec], self.D, self.w[wslot])

    def codes(self) -> list[int]:
        o = self.off[S_CODES]
        return list(self.buf[o:o + self.A])

    def day_totals(self) -> list[int]:
        """Events per day row (all action codes)."""
        A = self.A
        if not A:
            return [0] * self.D
        flat = uint_list(self.buf, self.off[S_ACT], self.D * A, self.w[W_ACT])
        return [sum(flat[i * A:(i + 1) * A]) for i in range(self.D)]
