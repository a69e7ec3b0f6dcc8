"""The RocksDB implementation of the state store, over rocksdict in raw mode (bytes keys and
values as they are). The only module that imports rocksdict: Faust's RocksDB table store opens
the stream's partition databases, and `RocksPartitionStore` wraps the handle it opened."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import rocksdict

from streams.state.store import StoreLocked


class RocksPartitionStore:
    """A `streams.state.store.PartitionStore` over one open rocksdict database. `get`, `put` and
    `delete` are the database's own methods (no wrapper call on the hot path)."""

    __slots__ = ("db", "get", "put", "delete")

    get: Callable[[bytes], bytes | None]
    put: Callable[[bytes, bytes], None]
    delete: Callable[[bytes], None]

    def __init__(self, db: Any):
        self.db = db
        self.get = db.get
        self.put = db.put
        self.delete = db.delete

    def items(self, start: bytes = b"", end: bytes | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=start):
            if end is not None and key >= end:
                return
            yield key, value

    def keys(self, start: bytes = b"", end: bytes | None = None) -> Iterator[bytes]:
        for key in self.db.keys(from_key=start):
            if end is not None and key >= end:
                return
            yield key

    def put_many(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in pairs:
            batch.put(key, value)
        self.db.write(batch)

    def checkpoint(self, target: Path) -> None:
        rocksdict.Checkpoint(self.db).create_checkpoint(str(target))

    def compact(self) -> None:
        self.db.compact_range(None, None)

    def drop(self) -> None:
        it = self.db.iter()
        it.seek_to_last()
        if not it.valid():
            return
        last = it.key()
        it.seek_to_first()
        self.db.delete_range(it.key(), last)
        self.db.delete(last)

    def close(self) -> None:
        self.db.close()


def open_store(path: Path) -> RocksPartitionStore:
    """Open (creating it if missing) the RocksDB at `path` as a store of its own; raises
    StoreLocked when another process has it open."""
    try:
        return RocksPartitionStore(rocksdict.Rdict(str(path),
                                                   options=rocksdict.Options(raw_mode=True)))
    except Exception as e:             # rocksdict raises a plain Exception on a held lock
        if "lock" in str(e).lower():
            raise StoreLocked(f"{path} is open in another process") from None
        raise


def is_locked(path: Path) -> bool:
    """Whether another process holds the RocksDB at `path` open."""
    try:
        open_store(path).close()
    except StoreLocked:
        return True
    return False
