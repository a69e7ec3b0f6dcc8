"""streams.io.changelog_writer: the persisted offset moves once per flush over the acknowledged
writes that directly follow it, as streams.faust_compat.tables.guard_persisted moves it write
by write; a failed delivery raises and moves nothing. The producer here is a stand-in for
librdkafka's (its produce/flush/callback contract); tests/integration/test_changelog_writer.py
runs the real one against the broker."""
from __future__ import annotations

import asyncio
import logging

import pytest

from streams.io.changelog_writer import ChangelogWriter, advance
from streams.io.publisher import DeliveryError


def test_advance_moves_over_the_offsets_that_follow_and_stops_at_a_gap():
    assert advance(None, []) == (None, None)
    assert advance(None, [0, 1, 2]) == (2, None)
    assert advance(4, [5, 6]) == (6, None)
    assert advance(4, [3, 4, 5]) == (5, None)          # older ones (a restore read them) skipped
    assert advance(4, [5, 8, 9]) == (5, 8)             # 6..7 are someone else's
    assert advance(None, [3, 4]) == (None, 3)          # the first record is not ours
    assert advance(4, [9]) == (4, 9)


def reference_guard(held, offsets):
    """guard_persisted's on_sent, one acknowledged write at a time."""
    for o in offsets:
        if (held is None and o == 0) or (held is not None and o == held + 1):
            held = o
    return held


@pytest.mark.parametrize("held,offsets", [
    (None, [0, 1, 2, 3]), (None, [1, 2]), (7, [8, 9, 11, 12]), (7, [5, 6, 7, 8]), (0, [])])
def test_advance_ends_where_the_write_by_write_guard_ends(held, offsets):
    assert advance(held, offsets)[0] == reference_guard(held, offsets)


class Msg:
    def __init__(self, topic, partition, offset):
        self._t, self._p, self._o = topic, partition, offset

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o


class FakeProducer:
    """librdkafka's Producer as the writer uses it: produce queues with a delivery callback,
    flush delivers (calling back on the flushing thread) and returns what is left."""

    def __init__(self, ends=None, fail=()):
        self.ends = dict(ends or {})        # partition -> next offset
        self.fail = set(fail)               # partitions whose records fail
        self.queue = []
        self.records = []

    def produce(self, topic, value, key, partition, on_delivery):
        self.queue.append((topic, value, key, partition, on_delivery))

    def flush(self, timeout):
        for topic, value, key, p, cb in self.queue:
            if p in self.fail:
                cb("broker down", Msg(topic, p, -1))
                continue
            o = self.ends.get(p, 0)
            self.ends[p] = o + 1
            self.records.append((p, o, key, value))
            cb(None, Msg(topic, p, o))
        self.queue = []
        return 0

    def poll(self, timeout):
        return 0


class Offsets:
    def __init__(self, held=None):
        self.held = dict(held or {})
        self.sets = []

    def get(self, p):
        return self.held.get(p)

    def set(self, p, o):
        self.held[p] = o
        self.sets.append((p, o))


def writer_with(producer, offsets):
    return ChangelogWriter("app-user-state-changelog", {}, offsets, "user-state", producer)


def test_a_flush_delivers_the_records_in_order_and_sets_each_offset_once():
    producer, offsets = FakeProducer({0: 5, 1: 0}), Offsets({0: 4})
    w = writer_with(producer, offsets)
    for i in range(3):
        w.write(0, b"k%d" % i, b"v%d" % i)
    w.write(1, b"a", b"x")
    assert producer.records == [] and w.queued == 4       # queued, not sent
    asyncio.run(w.flush())
    assert producer.records == [(0, 5, b"k0", b"v0"), (0, 6, b"k1", b"v1"),
                                (0, 7, b"k2", b"v2"), (1, 0, b"a", b"x")]
    assert sorted(offsets.sets) == [(0, 7), (1, 0)] and w.queued == 0


def test_foreign_records_in_between_hold_the_offset_and_warn_once(caplog):
    producer, offsets = FakeProducer({0: 5}), Offsets({0: 4})
    w = writer_with(producer, offsets)
    w.write(0, b"k", b"v")
    asyncio.run(w.flush())
    producer.ends[0] += 2                   # a frozen worker's two late writes land here
    caplog.set_level(logging.WARNING)
    for _ in range(2):
        w.write(0, b"k", b"v")
        asyncio.run(w.flush())
    assert offsets.held[0] == 5 and offsets.sets == [(0, 5)]
    warnings = [r.getMessage() for r in caplog.records if "did not write" in r.getMessage()]
    assert len(warnings) == 1 and "offsets 6..7" in warnings[0]


def test_a_failed_delivery_raises_after_moving_over_what_was_acknowledged():
    producer, offsets = FakeProducer({0: 0}, fail={1}), Offsets()
    w = writer_with(producer, offsets)
    w.write(0, b"k", b"v")
    w.write(1, b"k", b"v")
    with pytest.raises(DeliveryError, match="1 changelog records"):
        asyncio.run(w.flush())
    assert offsets.sets == [(0, 0)]         # in the changelog and in the store
    producer.fail.clear()                   # the next flush starts clean
    w.write(0, b"k", b"v")
    w.write(1, b"k", b"v")
    asyncio.run(w.flush())
    assert offsets.sets == [(0, 0), (0, 1), (1, 0)]


def test_in_a_transaction_the_offsets_move_only_at_its_commit_and_over_its_markers():
    """exactly_once_v2: each committed transaction ends with a marker right after its last
    record of each partition; the persisted offset moves over both at the commit, so the next
    transaction's records follow it with no gap. An aborted one never counts."""
    producer, offsets = FakeProducer({0: 5, 1: 0}), Offsets({0: 4})
    w = writer_with(producer, offsets)
    w.write(0, b"k", b"v")
    w.write(1, b"a", b"x")
    asyncio.run(w.deliver())
    assert producer.records and offsets.sets == []          # delivered, not committed
    w.committed()
    assert sorted(offsets.sets) == [(0, 6), (1, 1)]         # records 5 and 0, markers 6 and 1
    producer.ends = {0: 7, 1: 2}                            # after the markers
    w.write(0, b"k", b"v")
    asyncio.run(w.deliver())
    w.committed()
    assert offsets.held == {0: 8, 1: 1}
    producer.ends[0] = 9
    w.write(0, b"k", b"v")                                  # offset 9: its transaction aborts
    asyncio.run(w.deliver())
    w.aborted()
    w.committed()
    assert offsets.held == {0: 8, 1: 1}
