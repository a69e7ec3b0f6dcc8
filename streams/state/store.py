"""What every user of a partition's local state store may do with it (the stream's batches,
the scheduled runs, restores, backups, monitoring and the seed API)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Protocol


class StoreLocked(RuntimeError):
    """The store is open in another process."""


class KeyWrites(Protocol):
    """Writes of single keys: a store, or a stand-in queueing them (an outbox)."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class PartitionStore(KeyWrites, Protocol):
    """One partition's keys and values, bytes both, keys in byte order. Writes are local: a
    write that must survive the loss of the machine goes through the table's changelog too."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self, start: bytes = b"", end: bytes | None = None
              ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for start <= key < end (no end: to the last key), in key order, as the
        store is when the iteration starts."""
        ...

    def keys(self, start: bytes = b"", end: bytes | None = None) -> Iterator[bytes]:
        """The keys `items` would give."""
        ...

    def put_many(self, pairs: Iterable[tuple[bytes, bytes]]) -> None:
        """Put every (key, value) in one atomic write."""
        ...

    def checkpoint(self, target: Path) -> None:
        """A consistent copy of the whole store in the new folder `target`, openable as a store
        of its own (hard links where the file system allows)."""
        ...

    def compact(self) -> None:
        """Reclaim the space of deleted and overwritten keys (may take long: run it off the
        event loop)."""
        ...

    def drop(self) -> None:
        """Delete every key."""
        ...


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key starting with `prefix` (None: there is none)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None
