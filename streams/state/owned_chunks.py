"""For each chunk of a partition's users, under the pipeline lock: how the scheduled runs and the
quality scan walk the state while the stream keeps running.

The lock is taken per chunk, so the agent runs between chunks and never sees a half-updated
user. Before each chunk the partition must still be this worker's, with no table recovery
rewriting it and its database open; no database iterator is kept across an await (a rebalance
may close the database), so each chunk is read afresh from where the last one ended.
"""
from __future__ import annotations

import asyncio
import random
from contextlib import AbstractAsyncContextManager
from itertools import islice
from typing import Any, Awaitable, Callable, Protocol

from streams.state import PartitionStore
from streams.state.table_keys import iter_due, iter_users, user_key

CHUNK = 500                 # users per hold of the pipeline lock
REVOKED = "partition revoked or recovering"
NOT_OPEN = "partition database not open"

Chunk = list[Any]
Handler = Callable[[PartitionStore, Chunk], Awaitable[None]]  # (the partition's store, chunk)


class ChunkSource(Protocol):
    def next_chunk(self, db: PartitionStore) -> Chunk:
        """The next chunk read from the partition's store (empty: none left)."""
        ...


class Partitions(Protocol):
    """streams.faust_compat.group.FaustGroup"""
    def owned(self) -> list[int]: ...

    def available(self, partition: int) -> bool: ...


class OpenStores(Protocol):
    """streams.faust_compat.tables.PartitionedTable"""
    def open_store(self, partition: int) -> PartitionStore | None: ...


class OwnedChunks:
    def __init__(self, partitions: Partitions, states: OpenStores,
                 lock: AbstractAsyncContextManager[Any]):   # an asyncio.Lock or CommittingLock
        self.partitions = partitions
        self.states = states
        self.lock = lock

    def owned(self) -> list[int]:
        return self.partitions.owned()

    async def each(self, partition: int, source: ChunkSource, handle: Handler) -> str | None:
        """Call `await handle(db, chunk)` for each chunk `source` reads from the partition, with
        the lock held. None once the source is exhausted; else why it stopped early (REVOKED,
        NOT_OPEN)."""
        while True:
            async with self.lock:
                if not self.partitions.available(partition):
                    return REVOKED
                db = self.states.open_store(partition)
                if db is None:
                    return NOT_OPEN
                chunk = source.next_chunk(db)
                if not chunk:
                    return None
                await handle(db, chunk)
            await asyncio.sleep(0)


class AllUsers:
    """(key, encoded state) of every user in key order."""

    def __init__(self, size: int = CHUNK):
        self.size = size
        self.after = b"0"

    def next_chunk(self, db: PartitionStore) -> Chunk:
        chunk = list(islice(iter_users(db, self.after), self.size))
        if chunk:
            self.after = chunk[-1][0] + b"\x00"
        return chunk


class DueUsers:
    """(due key, day, user id) of the due index up to `day`, from its start each time: the
    handler moves every entry it is given on (or deletes it)."""

    def __init__(self, day: int, size: int = CHUNK):
        self.day = day
        self.size = size

    def next_chunk(self, db: PartitionStore) -> Chunk:
        return list(islice(iter_due(db, self.day), self.size))


class SampleOfUsers:
    """(key, encoded state) of up to `n` users in key order from a random key on, wrapping
    around to the first key once."""

    def __init__(self, n: int, size: int, rng: random.Random | None = None):
        self.todo = n
        self.size = size
        self.start = user_key((rng or random).randrange(1, 10 ** 9))
        self.after = self.start
        self.wrapped = False

    def next_chunk(self, db: PartitionStore) -> Chunk:
        while self.todo > 0:
            chunk = []
            for key, blob in iter_users(db, self.after):
                if self.wrapped and key >= self.start:
                    break
                chunk.append((key, blob))
                if len(chunk) >= min(self.todo, self.size):
                    break
            if chunk:
                self.todo -= len(chunk)
                self.after = chunk[-1][0] + b"\x00"
                return chunk
            if self.wrapped:
                break
            self.after, self.wrapped = b"0", True
        return []
