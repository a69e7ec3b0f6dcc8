"""A restore never takes a user's state (or the partition's clock) back to fewer source offsets:
a worker that froze after handing states to its producer sends them when it thaws, after the
partition's next owner wrote newer ones, and a restore from that changelog lost events in a
chaos run on Apache Kafka (streams.state_table.not_older, faust_compat.tables.guard_changelog)."""
from __future__ import annotations

from types import SimpleNamespace

from features import columnar
from streams.faust_compat.tables import guard_changelog
from streams.state_table import FEATURES_KEY, PARTITION_KEY, PartitionClock, not_older, user_key


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


def test_a_restore_batch_skips_the_late_writes_and_applies_the_rest_in_order():
    dbs = {0: {user_key(1): state(50)}, 1: {}}
    applied: list = []
    table = SimpleNamespace(name="user-state", data=SimpleNamespace(_db_for_partition=dbs.get),
                            apply_changelog_batch=applied.extend)
    guard_changelog(table, not_older)

    def ev(p, key, value):
        return SimpleNamespace(message=SimpleNamespace(partition=p, key=key, value=value))
    batch = [ev(0, user_key(1), state(40)),     # older than the stored state: refused
             ev(0, user_key(1), state(60)),
             ev(1, user_key(2), state(30)),
             ev(1, user_key(2), state(20)),     # older than the one before it in the batch
             ev(1, user_key(3), None),          # a deletion always applies
             ev(1, user_key(2), state(30))]     # as new as the one kept
    table.apply_changelog_batch(batch)
    assert applied == [batch[1], batch[2], batch[4], batch[5]]
