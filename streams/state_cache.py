"""An LRU cache of decoded user states (`performance.memory.max_cache_size` entries).

Decoding a typical state costs about as much as applying a batch of its events, and an active
user comes back batch after batch. Each entry keeps the encoded bytes it was decoded from (or
encoded to); a hit needs the table's current bytes to be equal, so anything else that rewrote
the state (a scheduled run, a rebalance that brought back a partition, a restore) is a miss and
never a stale read. The pipeline clears the cache when a batch's outputs are not emitted (its
cached states were already advanced in place).
"""
from __future__ import annotations

from collections import OrderedDict

from features.state import UserState


class StateCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[bytes, UserState]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: int, blob: bytes) -> UserState | None:
        """The decoded state if the cached one was decoded from exactly `blob`."""
        entry = self._entries.get(user_id)
        if entry is not None and entry[0] == blob:
            self._entries.move_to_end(user_id)
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def put(self, user_id: int, blob: bytes, state: UserState) -> None:
        if self.capacity <= 0:
            return
        self._entries[user_id] = (blob, state)
        self._entries.move_to_end(user_id)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def discard(self, user_id: int) -> None:
        self._entries.pop(user_id, None)

    def clear(self) -> None:
        self._entries.clear()
