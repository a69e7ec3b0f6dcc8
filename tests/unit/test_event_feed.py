"""The raw event feed between Faust's consumer and the pipeline, and the decoded-state cache."""
from __future__ import annotations

import asyncio

from features.state import UserState
from streams.event_feed import EventFeed
from streams.state_cache import StateCache


def test_take_returns_what_is_there_up_to_the_batch_size():
    async def run():
        feed = EventFeed("t", capacity=10)
        for i in range(7):
            feed.put(i)
        assert await feed.take(5, within=0) == [0, 1, 2, 3, 4]
        assert await feed.take(5, within=0.01) == [5, 6]      # waited, then took what came
        assert len(feed) == 0
    asyncio.run(run())


def test_take_waits_for_the_first_message_then_fills_within_the_time():
    async def run():
        feed = EventFeed("t", capacity=100)

        async def later():
            await asyncio.sleep(0.02)
            feed.put("a")
            await asyncio.sleep(0.01)
            for x in "bcd":
                feed.put(x)
        task = asyncio.create_task(later())
        # woken as soon as 4 are there: waiting out `within` would end the test with a timeout
        batch = await asyncio.wait_for(feed.take(4, within=3600), 60)
        await task
        return batch
    assert asyncio.run(run()) == ["a", "b", "c", "d"]


def test_a_full_feed_holds_the_producer_until_taken_and_clear_drops_everything():
    async def run():
        feed = EventFeed("t", capacity=3)
        for i in range(3):
            feed.put(i)
        assert feed.full()
        waiter = asyncio.create_task(feed.wait_space())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        assert await feed.take(2, within=0) == [0, 1]
        await asyncio.wait_for(waiter, 0.5)
        feed.put(3)
        feed.clear()                   # a rebalance: nothing buffered is processed
        assert len(feed) == 0 and not feed.full()
    asyncio.run(run())


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
