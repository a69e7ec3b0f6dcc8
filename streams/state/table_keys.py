"""The `user-state` table's key layout, and reading one partition's RocksDB in key order.

One changelog-backed RocksDB table holds, per partition:
  b"<decimal user_id>"            the user's encoded state (features.encoding)
  b"\\x00due" + day + user_id      the due index: the user's profile can change on `day`
  b"\\x00partition"                the partition's stream time (largest event timestamp seen), the
                                  last source offset processed and, after a bootstrap handed over
                                  at a time (bootstrap/), that time: its events up to it are in
                                  the states already
  b"\\x00features"                 fingerprint of the feature config last fully evaluated
Everything lives in the partition of its user (or the partition it describes). The due index is
written to the local RocksDB only (it costs no changelog records); each state's header holds the
same day, so it is rebuilt from the headers when a partition is (re)assigned.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from features.encoding import StateDecodeError, read_header
from features.schedule import NEVER
from features.state import UserState
from streams.state import KeyWrites, PartitionStore

if TYPE_CHECKING:
    from features.columnar.layout import ColumnarState

DUE_PREFIX = b"\x00due"
PARTITION_KEY = b"\x00partition"
FEATURES_KEY = b"\x00features"
_DUE = struct.Struct(">IQ")         # big-endian: keys sort by day, then user
_I64 = struct.Struct("<q")
_CLOCK = struct.Struct("<qq")
_CLOCK_HANDOVER = struct.Struct("<qqq")
FAUST_OFFSET_KEY = b"__faust\x00offset__"
USERS_START, USERS_END = b"0", b":"    # user keys are decimal digits: "0" <= key < ":"


def user_key(user_id: int) -> bytes:
    return str(user_id).encode()


def processed_offset(key: bytes, value: bytes) -> int | None:
    """The last source offset a changelog value says it applied: a user's state (its header) or
    the partition's clock; None for the other keys, and for a value that cannot be read."""
    try:
        if is_user_key(key):
            return read_header(value).source_offset
        if key == PARTITION_KEY:
            return PartitionClock.unpack(value).offset
    except (StateDecodeError, struct.error):
        pass
    return None


def not_older(key: bytes, stored: bytes | None, incoming: bytes) -> bool:
    """Whether a changelog value may replace the stored one at a restore: a user's state and the
    partition's clock never go back in the source offsets they applied. An older one is a
    worker's that froze after handing it to its producer and sent it when it thawed, after the
    partition's next owner had written newer ones (docs/RELIABILITY.md); it must not become the
    state a restore starts from."""
    if stored is None:
        return True
    new, old = processed_offset(key, incoming), processed_offset(key, stored)
    return new is None or old is None or new >= old


def is_user_key(key: bytes) -> bool:
    return key[:1].isdigit()


def due_key(day: int, user_id: int) -> bytes:
    return DUE_PREFIX + _DUE.pack(day, user_id)


def parse_due_key(key: bytes) -> tuple[int, int]:
    return _DUE.unpack_from(key, len(DUE_PREFIX))


NO_HANDOVER = -1


@dataclass(frozen=True)
class PartitionClock:
    stream_time: int = -1       # FEATURES.md §2: largest event timestamp seen (-1: none)
    offset: int = -1            # last source offset processed
    # a bootstrap that handed over at a time (docs/BOOTSTRAP.md): the partition's events with a
    # timestamp up to it are in the states already, and the stream skips them
    handover_ts: int = NO_HANDOVER

    def pack(self) -> bytes:
        if self.handover_ts == NO_HANDOVER:     # (the 16 bytes every clock had before)
            return _CLOCK.pack(self.stream_time, self.offset)
        return _CLOCK_HANDOVER.pack(self.stream_time, self.offset, self.handover_ts)

    @classmethod
    def unpack(cls, b: bytes | None) -> "PartitionClock":
        if b is None:
            return cls()
        if len(b) == _CLOCK_HANDOVER.size:
            return cls(*_CLOCK_HANDOVER.unpack(b))
        return cls(*_CLOCK.unpack(b))


def pack_int(v: int) -> bytes:
    return _I64.pack(v)


def unpack_int(b: bytes | None, default: int) -> int:
    return default if b is None else _I64.unpack(b)[0]


def move_due(db: KeyWrites, user_id: int, state: UserState | ColumnarState, day: int) -> None:
    """Move the user's entry in the partition's due index to `day` (and the state's header
    with it). The index is local to the RocksDB (no changelog): the state header carries the
    same day, and the index is rebuilt from the headers after a partition is (re)assigned."""
    if day == state.due_day:
        return
    if state.due_day >= 0:
        db.delete(due_key(state.due_day, user_id))
    if day != NEVER:
        db.put(due_key(day, user_id), b"")
    state.due_day = day


def repair_due(db: PartitionStore, user_id: int, due_day: int) -> bool:
    """Put back the user's due-index entry for the day its state header names, if missing;
    whether it was missing."""
    if due_day >= 0 and db.get(due_key(due_day, user_id)) is None:
        db.put(due_key(due_day, user_id), b"")
        return True
    return False


def iter_due(db: PartitionStore, upto_day: int) -> Iterator[tuple[bytes, int, int]]:
    """(key, day, user_id) of due-index entries with day <= upto_day, in day order."""
    for key in db.keys(DUE_PREFIX, due_key(upto_day + 1, 0)):
        day, uid = parse_due_key(key)
        yield key, day, uid


def iter_users(db: PartitionStore, after: bytes = USERS_START
               ) -> Iterator[tuple[bytes, bytes]]:
    """(key, encoded state) of every user in the partition from key `after` on, in key order
    (a fresh iteration sees the store as it is now)."""
    return db.items(max(after, USERS_START), USERS_END)
