"""Hold-back of publishes (`real_time_update.update_interval` = S seconds): a user's profile goes
out at most once per S. The first change after a quiet spell goes out at once; a change within S
of the last publish is held (the state's HELD flag, features.columnar.layout) and the user's
latest profile goes out when S has passed. Pure: the stream (streams.pipeline.holdback) keeps
one `HeldUsers` per worker and drains it on a timer.

Times are wall-clock milliseconds (a state's `published_at`: 0 when none is recorded).

The hold-back's rule; the same concept in the stream is streams/pipeline/holdback.py, in the
benchmarks tools/bench/holdback.py.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class HoldBack:
    interval: float = 0.0       # seconds; 0: every change is published at once

    @property
    def enabled(self) -> bool:
        return self.interval > 0

    @property
    def interval_ms(self) -> int:
        return int(round(self.interval * 1000))

    def due_ms(self, published_at: int) -> int:
        """When a change held after a publish at `published_at` may go out."""
        return published_at + self.interval_ms

    def publish_now(self, published_at: int, now_ms: int) -> bool:
        """Whether a change may be published at `now_ms` (else it is held until `due_ms`). A
        publish time ahead of the clock (another worker's skew) holds at most one interval from
        now."""
        if not self.enabled or published_at <= 0:
            return True
        if published_at > now_ms + self.interval_ms:
            return True
        return now_ms >= self.due_ms(published_at)


@dataclass(slots=True)
class Held:
    """One held user: the partition of their state, when their profile may go out, since when
    it waits (this worker's knowledge: a user found held in the state after an assignment
    counts from then) and the events applied since it was held (for calculate_priority)."""
    partition: int
    user_id: int
    due_ms: int
    since_ms: int
    events: list[Any] = field(default_factory=list)


class HeldUsers:
    """The local due index of held users: who is due first, by (partition, user)."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, int], Held] = {}
        self._heap: list[tuple[int, int, int]] = []      # (due_ms, partition, user); stale ok
        self.indexed: set[int] = set()                  # partitions rebuilt from their states

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._held

    def hold(self, partition: int, user_id: int, due_ms: int, now_ms: int,
             events: Iterable[Any] = ()) -> None:
        """The user's change is held until `due_ms` (a user held already keeps their due time
        and waiting time; the events add up)."""
        h = self._held.get((partition, user_id))
        if h is None:
            h = self._held[(partition, user_id)] = Held(partition, user_id, due_ms, now_ms)
            heapq.heappush(self._heap, (due_ms, partition, user_id))
        elif due_ms != h.due_ms:
            h.due_ms = due_ms
            heapq.heappush(self._heap, (due_ms, partition, user_id))
        h.events.extend(events)

    def release(self, partition: int, user_id: int) -> None:
        """The user's profile went out (or needs not): nothing held."""
        self._held.pop((partition, user_id), None)

    def take_due(self, now_ms: int, limit: int,
                 priority: Callable[[Held], float]) -> list[Held]:
        """Up to `limit` users due at `now_ms`, taken out of the index, highest priority first
        (ties: the earlier due first). Those past the limit stay for the next call."""
        due: list[Held] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            d, p, u = heapq.heappop(heap)
            h = self._held.get((p, u))
            if h is not None and h.due_ms == d:
                due.append(h)
        due.sort(key=lambda h: (-priority(h), h.due_ms))
        for h in due[limit:]:
            heapq.heappush(heap, (h.due_ms, h.partition, h.user_id))
        out = due[:limit]
        for h in out:
            del self._held[(h.partition, h.user_id)]
        return out

    def next_due_ms(self) -> int | None:
        """No user is due before this (None: nobody is held)."""
        return self._heap[0][0] if self._heap else None

    def forget(self) -> None:
        """After a rebalance: the partitions are indexed again from their states."""
        self._held.clear()
        self._heap.clear()
        self.indexed.clear()

    def oldest_since(self) -> int | None:
        """When the user waiting longest was held (None: nobody is)."""
        return min((h.since_ms for h in self._held.values()), default=None)
