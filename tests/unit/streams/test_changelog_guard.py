"""A restore never takes a user's state (or the partition's clock) back to fewer source offsets:
a worker that froze after handing states to its producer sends them when it thaws, after the
partition's next owner wrote newer ones, and a restore from that changelog lost events in a
chaos run on Apache Kafka (streams.state.table_keys.not_older, faust_compat.tables.guard_changelog).
And the persisted changelog offset, where a restore starts, never moves past records this store
did not apply (faust_compat.tables.guard_persisted): the same frozen worker's late writes moved it
past its successor's, and the restore that skipped them lost 512 events in make chaos."""
from __future__ import annotations

from types import SimpleNamespace

from faust.types import TP

from features import columnar
from streams.faust_compat.tables import guard_changelog, guard_persisted
from streams.state.table_keys import (
    FEATURES_KEY,
    PARTITION_KEY,
    PartitionClock,
    not_older,
    user_key,
)


def state(source_offset: int) -> bytes:
    s = columnar.ColumnarState.new()
    s.source_offset = source_offset
    return columnar.encode(s)


def test_a_state_or_clock_that_went_back_is_refused_and_the_rest_pass():
    k = user_key(7)
    assert not_older(k, None, state(5))
    assert not_older(k, state(5), state(5)) and not_older(k, state(5), state(9))
    assert not not_older(k, state(9), state(5))
    assert not not_older(PARTITION_KEY, PartitionClock(100, 9).pack(), PartitionClock(90, 5).pack())
    assert not_older(PARTITION_KEY, PartitionClock(90, 5).pack(), PartitionClock(100, 9).pack())
    assert not_older(FEATURES_KEY, b"old", b"new")          # no offset to compare
    assert not_older(k, b"\xffgarbage", state(1))           # unreadable: not judged


class Handle(dict):
    """A partition's rocksdict database as far as the guards use it."""

    def put(self, key, value):
        self[key] = value

    def delete(self, key):
        self.pop(key, None)


class Store:
    """Faust's RocksDB store as far as the guards use it: partition databases and the persisted
    changelog offset of each changelog partition."""

    def __init__(self, dbs: dict):
        self.dbs, self.persisted = {p: Handle(db) for p, db in dbs.items()}, {}

    def _db_for_partition(self, partition):
        return self.dbs[partition]

    def persisted_offset(self, tp):
        return self.persisted.get(tp)

    def set_persisted_offset(self, tp, offset):
        self.persisted[tp] = offset


def tp(partition: int) -> TP:
    return TP("user-profiles-user-state-changelog", partition)


def test_a_restore_batch_skips_the_late_writes_and_applies_the_rest_in_order():
    store = Store({0: {user_key(1): state(50)}, 1: {}})
    applied: list = []
    table = SimpleNamespace(name="user-state", data=store, apply_changelog_batch=applied.extend)
    guard_changelog(table, not_older)

    def ev(p, offset, key, value):
        return SimpleNamespace(message=SimpleNamespace(partition=p, key=key, value=value,
                                                       tp=tp(p), offset=offset))
    batch = [ev(0, 10, user_key(1), state(40)),     # older than the stored state: refused
             ev(0, 11, user_key(1), state(60)),
             ev(1, 20, user_key(2), state(30)),
             ev(1, 21, user_key(2), state(20)),     # older than the one before it in the batch
             ev(1, 22, user_key(3), None),          # a deletion always applies
             ev(1, 23, user_key(2), state(30)),     # as new as the one kept
             ev(1, 24, user_key(2), state(10))]     # refused, and the batch's last record
    table.apply_changelog_batch(batch)
    assert applied == [batch[1], batch[2], batch[4], batch[5]]
    # read up to the last record, refused ones included
    assert store.persisted == {tp(0): 11, tp(1): 24}


def sent(partition: int, offset: int):
    res = SimpleNamespace(topic_partition=tp(partition), offset=offset)
    return SimpleNamespace(result=lambda: res)


def ack(table, partition: int, offset: int) -> None:
    """What Faust's producer calls when a changelog write is acknowledged."""
    table._on_changelog_sent(sent(partition, offset))  # noqa: SLF001  (the callback it replaced)


def test_a_write_acknowledged_after_records_of_another_writer_does_not_move_the_restore_start():
    store = Store({4: {}})
    table = SimpleNamespace(name="user-state", data=store, _on_changelog_sent=None)
    guard_persisted(table)
    store.set_persisted_offset(tp(4), 2400)             # restored, or written, up to 2400
    ack(table, 4, 2401)
    ack(table, 4, 2402)
    assert store.persisted[tp(4)] == 2402               # its own writes, one after another
    # frozen; the next owner writes 2403..3702; thawed, its queued writes land at 3905..
    ack(table, 4, 3905)
    ack(table, 4, 3906)
    assert store.persisted[tp(4)] == 2402               # the restore will read 2403 onwards
    ack(table, 4, 100)              # an old acknowledgement: no move back
    assert store.persisted[tp(4)] == 2402
    # a restore read everything up to 4137 (guard_changelog kept the newest states)
    store.set_persisted_offset(tp(4), 4137)
    ack(table, 4, 4138)
    assert store.persisted[tp(4)] == 4138


def test_a_fresh_store_moves_only_from_the_changelog_start():
    store = Store({0: {}, 1: {}})
    table = SimpleNamespace(name="user-state", data=store, _on_changelog_sent=None)
    guard_persisted(table)
    ack(table, 0, 0)
    ack(table, 1, 57)               # 0..56 never read by this store
    assert store.persisted == {tp(0): 0}
