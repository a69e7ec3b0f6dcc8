"""For each chunk of a partition's users, under the lock (streams.state.owned_chunks): on a real
RocksDB, with the group's view of the partition faked."""
from __future__ import annotations

import asyncio
import random

from streams.state.owned_chunks import (
    NOT_OPEN,
    REVOKED,
    AllUsers,
    DueUsers,
    OwnedChunks,
    SampleOfUsers,
)
from streams.state.rocksdb import open_store
from streams.state.table_keys import PARTITION_KEY, due_key, user_key


class Group:
    def __init__(self):
        self.mine = {0}

    def owned(self):
        return sorted(self.mine)

    def available(self, partition):
        return partition in self.mine


class States:
    def __init__(self, db):
        self.db = db

    def open_store(self, partition):
        return self.db


def database(tmp_path, users):
    db = open_store(tmp_path / "p0")
    for u in users:
        db.put(user_key(u), b"state")
    db.put(PARTITION_KEY, b"clock")         # not a user: never in a chunk
    return db


def test_every_user_in_key_order_a_chunk_at_a_time_with_the_lock_held(tmp_path):
    db = database(tmp_path, range(1, 12))
    lock = asyncio.Lock()
    chunks = OwnedChunks(Group(), States(db), lock)
    seen: list[list[bytes]] = []

    async def handle(got_db, chunk):
        assert lock.locked() and got_db is db
        seen.append([k for k, _ in chunk])
    assert asyncio.run(chunks.each(0, AllUsers(size=4), handle)) is None
    keys = sorted(user_key(u) for u in range(1, 12))
    assert seen == [keys[0:4], keys[4:8], keys[8:11]]
    db.close()


def test_a_partition_revoked_or_not_open_stops_the_walk_and_says_why(tmp_path):
    db = database(tmp_path, range(1, 12))
    group = Group()
    chunks = OwnedChunks(group, States(db), asyncio.Lock())
    seen = []

    async def handle(_, chunk):
        seen.append(len(chunk))
        group.mine.clear()                  # revoked while the first chunk was handled
    assert asyncio.run(chunks.each(0, AllUsers(size=4), handle)) == REVOKED
    assert seen == [4]
    group.mine.add(0)
    assert asyncio.run(OwnedChunks(group, States(None), asyncio.Lock()).each(
        0, AllUsers(), handle)) == NOT_OPEN
    db.close()


def test_due_entries_come_from_the_start_until_the_handler_has_moved_them_all(tmp_path):
    db = database(tmp_path, [])
    for day, uid in [(5, 1), (5, 2), (6, 3), (9, 4)]:
        db.put(due_key(day, uid), b"")
    handled = []

    async def handle(got, entries):
        for key, day, uid in entries:
            handled.append((day, uid))
            got.delete(key)                 # moved on (here: out of the index)
    walk = OwnedChunks(Group(), States(db), asyncio.Lock()).each(0, DueUsers(6, size=2), handle)
    assert asyncio.run(walk) is None
    assert handled == [(5, 1), (5, 2), (6, 3)]      # day 9 is not due yet
    db.close()


class Start(random.Random):
    def __init__(self, key: int):
        super().__init__()
        self.key = key

    def randrange(self, *args):             # the "random" start key
        return self.key


def test_a_sample_starts_at_a_random_key_and_wraps_around_once(tmp_path):
    db = database(tmp_path, range(100, 130))
    seen: list[bytes] = []

    async def handle(_, chunk):
        seen.extend(k for k, _ in chunk)
    chunks = OwnedChunks(Group(), States(db), asyncio.Lock())
    asyncio.run(chunks.each(0, SampleOfUsers(1000, 7, Start(115)), handle))
    assert seen == [user_key(u) for u in [*range(115, 130), *range(100, 115)]]  # each once
    few: list[bytes] = []

    async def keep(_, chunk):
        few.extend(k for k, _ in chunk)
    asyncio.run(chunks.each(0, SampleOfUsers(10, 4, random.Random(3)), keep))
    assert len(few) == 10 and len(set(few)) == 10
    db.close()
