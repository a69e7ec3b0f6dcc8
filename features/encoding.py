"""The reference state (`features.state.UserState`) as the stored record, and the record's
header read and patched without decoding the rest.

There is one record format: v3, format 4 (features.columnar.layout, docs/COLUMNAR.md). The
reference state is converted to and from it (features.columnar.codec.from_reference /
to_reference), so a record the seed API writes is one the stream reads and the other way round.
The formats before it (v1 and v2, zlib-compressed integer arrays, and format 3, without the
hold-back's header fields) were never deployed and are no longer read.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from features.columnar.codec import decode as decode_v3
from features.columnar.codec import encode as encode_v3
from features.columnar.codec import from_reference, to_reference
from features.columnar.layout import CLOSED_DAY_AT, FORMAT, HEADER, StateDecodeError
from features.state import UserState

if TYPE_CHECKING:
    from features.columnar.layout import ColumnarState

__all__ = ["Header", "StateDecodeError", "decode", "encode", "patch_header", "read_header"]

# the header's bookkeeping, patched in place (features.columnar.layout.HEADER)
_BOOKKEEPING = struct.Struct("<qq")         # version counter, digest: right after T, offset
_BOOKKEEPING_AT = 17
_TAIL = struct.Struct("<iq")                # due day, published as_of
_TAIL_AT = 38
_CLOSED = struct.Struct("<i")


def encode(state: UserState, tz: int) -> bytes:
    return encode_v3(from_reference(state, tz))


def decode(data: bytes, tz: int, event_ids: bool = True) -> UserState:
    """The state; with event_ids=False the event-id hashes are left out (enough to evaluate,
    not to apply events or re-encode: scheduled jobs then patch the header instead)."""
    state = to_reference(decode_v3(data, tz), tz)
    if not event_ids:
        state.event_ids = {}
    return state


@dataclass(frozen=True, slots=True)
class Header:
    """What scheduled jobs read of every state without decoding it."""
    T: int
    source_offset: int
    version: int
    published_digest: int
    due_day: int
    published_as_of: int
    closed_day: int


def read_header(data: bytes) -> Header:
    if data[:1] != bytes((FORMAT,)) or len(data) < HEADER.size:
        raise StateDecodeError("not a state record (unknown format or too short)")
    f = HEADER.unpack_from(data)
    return Header(f[1], f[2], f[3], f[4], f[7], f[8], f[25])


def patch_header(data: bytes, state: UserState | ColumnarState) -> bytes:
    """`data` with the bookkeeping of `state` (version, digest, due day, published as_of and
    the closed day); the rest is unchanged."""
    if data[:1] != bytes((FORMAT,)):
        raise StateDecodeError(f"cannot patch a version {data[0] if data else None} state "
                               f"record in place")
    out = bytearray(data)
    _BOOKKEEPING.pack_into(out, _BOOKKEEPING_AT, state.version, state.published_digest)
    _TAIL.pack_into(out, _TAIL_AT, state.due_day, state.published_as_of)
    _CLOSED.pack_into(out, CLOSED_DAY_AT, state.closed_day)
    return bytes(out)
