"""Built records kept on local disk until the build is done: a share of a million users' states,
profiles and aggregates is gigabytes as Python objects, a few hundred MB as bytes in a file.

A spill file is a run of records, each `<kind u8><partition i32><key len u32><value len u32>`
then the key and value bytes. Kinds: STATE (to the changelog partition), PROFILE and
AGGREGATE (keyed outputs).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

STATE, PROFILE, AGGREGATE = 0, 1, 2
_HEAD = struct.Struct("<BiII")


class SpillWriter:
    def __init__(self, path: Path):
        self.path = path
        self._f: BinaryIO = open(path, "wb", buffering=1 << 20)

    def add(self, kind: int, partition: int, key: bytes, value: bytes) -> None:
        self._f.write(_HEAD.pack(kind, partition, len(key), len(value)))
        self._f.write(key)
        self._f.write(value)

    def close(self) -> None:
        self._f.close()


def read_spill(path: Path, kinds: tuple[int, ...]) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(kind, partition, key, value) of the file's records of these kinds, in file order."""
    with open(path, "rb", buffering=1 << 20) as f:
        while True:
            head = f.read(_HEAD.size)
            if not head:
                return
            kind, partition, nk, nv = _HEAD.unpack(head)
            body = f.read(nk + nv)
            if kind in kinds:
                yield kind, partition, body[:nk], body[nk:]
