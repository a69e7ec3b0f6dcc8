"""The raw event feed between Faust's consumer and the pipeline, and the decoded-state cache."""
from __future__ import annotations

import asyncio

from faust.types import TP

from features.state import UserState
from streams.io.event_feed import EventFeed
from streams.io.raw_batch import FetchedRun, RawBatch, RawRecord
from streams.state.cache import StateCache


def run_of(partition: int, offsets) -> FetchedRun:
    """A fetched run whose values say where they came from."""
    offsets = list(offsets)
    return FetchedRun(TP("t", partition), offsets, [b"k"] * len(offsets),
                      [b"%d@%d" % (partition, o) for o in offsets], [1.0] * len(offsets))


def taken(batch: RawBatch) -> list[tuple[int, int]]:
    """(partition, offset) of each record of the batch, in order; the columns agree."""
    assert len(batch.values) == len(batch.keys) == len(batch.timestamps) == len(batch)
    assert batch.values == [b"%d@%d" % po for po in zip(batch.partitions, batch.offsets)]
    return list(zip(batch.partitions, batch.offsets))


def test_take_returns_what_is_there_up_to_the_batch_size_splitting_a_run():
    async def run():
        feed = EventFeed("t", capacity=10)
        feed.put(run_of(0, range(3)))
        feed.put(run_of(1, range(10, 14)))
        assert len(feed) == 7
        assert taken(await feed.take(5, within=0)) == [(0, 0), (0, 1), (0, 2), (1, 10), (1, 11)]
        assert len(feed) == 2
        # waited, then took what came
        assert taken(await feed.take(5, within=0.01)) == [(1, 12), (1, 13)]
        assert len(feed) == 0
    asyncio.run(run())


def test_a_long_run_is_taken_a_batch_at_a_time_in_order_each_record_copied_once():
    async def run():
        feed = EventFeed("t", capacity=100)
        feed.put(run_of(0, range(2)))
        feed.put(run_of(3, range(100, 123)))
        feed.put(run_of(5, range(7, 9)))
        got = []
        while len(feed):
            batch = await feed.take(5, within=0)
            assert len(batch) == 5 or not len(feed)
            got += taken(batch)
        assert got == [(0, 0), (0, 1)] + [(3, o) for o in range(100, 123)] + [(5, 7), (5, 8)]
    asyncio.run(run())
    # the first piece fills the batch, the rest go in batch-size pieces
    pieces = run_of(3, range(10)).cut(2, 3)
    assert [p.offsets for p in pieces] == [[0, 1], [2, 3, 4], [5, 6, 7], [8, 9]]
    assert [p.values for p in pieces][1] == [b"3@2", b"3@3", b"3@4"]


def test_take_waits_for_the_first_record_then_fills_within_the_time():
    async def run():
        feed = EventFeed("t", capacity=100)

        async def later():
            await asyncio.sleep(0.02)
            feed.put(run_of(2, [5]))
            await asyncio.sleep(0.01)
            feed.put(run_of(3, [7, 8, 9]))
        task = asyncio.create_task(later())
        # woken as soon as 4 are there: waiting out `within` would end the test with a timeout
        batch = await asyncio.wait_for(feed.take(4, within=3600), 60)
        await task
        return batch
    assert taken(asyncio.run(run())) == [(2, 5), (3, 7), (3, 8), (3, 9)]


def test_a_full_feed_holds_the_producer_until_taken_and_clear_drops_everything():
    async def run():
        feed = EventFeed("t", capacity=3)
        feed.put(run_of(0, range(3)))
        assert feed.full()
        waiter = asyncio.create_task(feed.wait_space())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        assert taken(await feed.take(2, within=0)) == [(0, 0), (0, 1)]
        await asyncio.wait_for(waiter, 0.5)
        feed.put(run_of(0, [3]))
        feed.clear()                   # a rebalance: nothing buffered is processed
        assert len(feed) == 0 and not feed.full()
    asyncio.run(run())


def test_a_run_is_cut_where_its_offsets_jump_and_a_batch_gives_each_record_back():
    run = run_of(4, [3, 4, 5, 9, 10, 12])
    pieces = run.contiguous_pieces()
    assert [p.offsets for p in pieces] == [[3, 4, 5], [9, 10], [12]]
    assert [p.values for p in pieces] == [[b"4@3", b"4@4", b"4@5"], [b"4@9", b"4@10"],
                                          [b"4@12"]]
    whole = run_of(1, [7, 8])
    assert whole.contiguous_pieces() == [whole]
    batch = RawBatch([whole, pieces[1]])
    assert batch.record(2) == RawRecord("t", 4, 9, b"k", b"4@9", 1.0)
    assert batch.partitions == [1, 1, 4, 4]


def test_cache_hits_only_on_the_same_bytes_and_evicts_the_least_recent():
    cache = StateCache(2)
    a, b, c = UserState(T=1), UserState(T=2), UserState(T=3)
    cache.put(1, b"one", a)
    cache.put(2, b"two", b)
    assert cache.get(1, b"one") is a
    assert cache.get(1, b"one, rewritten by a scheduled run") is None    # never stale
    cache.put(3, b"three", c)            # 2 was used least recently
    assert cache.get(2, b"two") is None and cache.get(1, b"one") is a
    assert len(cache) == 2 and cache.hits == 2 and cache.misses == 2
    cache.clear()
    assert cache.get(1, b"one") is None
    off = StateCache(0)
    off.put(1, b"one", a)
    assert len(off) == 0


def test_one_record_in_16_of_each_run_is_timed_its_first_included():
    feed = EventFeed("t", capacity=100)
    delays: list[float] = []
    feed.on_arrival = delays.append
    run = run_of(0, range(40))
    run.timestamps = [float(i) for i in range(40)]      # record i: i seconds after the epoch
    feed.put(run)
    feed.put(run_of(1, [7]))                            # (timestamp 1.0)
    assert len(delays) == 4                             # records 0, 16, 32; then the 1-run
    assert delays[0] - delays[1] == 16 and delays[1] - delays[2] == 16
    assert delays[3] >= delays[0] - 1                   # (timestamp 1.0, timed no earlier)
