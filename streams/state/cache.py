"""Decoded user states in memory: an LRU of clean ones (`performance.memory.max_cache_size`) and
the dirty ones of the open checkpoint (the write-back state path, streams.pipeline.lifecycle).

A clean entry keeps the encoded bytes it was decoded from (or encoded to); a hit needs the
table's current bytes to be equal, so anything else that rewrote the state (a scheduled run, a
rebalance that brought back a partition, a restore) is a miss and never a stale read.

A dirty entry is a state advanced since it was last written: it is the newest state of that
user in that partition (the table holds an older one until the next flush), so it is used
without reading the table. Dirty entries are never evicted; the lifecycle flushes them (on the
commit interval, on `real_time_update.max_dirty_users`, before others take the pipeline lock
and before a rebalance goes on) and they become clean. When a checkpoint's outputs are not
emitted (an error, a rebalance, fencing) every entry goes: states were advanced in place.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from features.columnar import ColumnarState, ColumnarUpdate
from features.events import Event


@dataclass(slots=True)
class DirtyUser:
    """A user advanced since the last flush, and what the flush needs to know of it."""
    user_id: int
    partition: int
    key: bytes
    state: ColumnarState
    # counts and closing days since the last flush (features.columnar.finish evaluates it)
    update: ColumnarUpdate
    events: list[Event] = field(default_factory=list)   # for UpdateStrategy.should_update
    ingest_ts: float | None = None      # Kafka timestamp of its first event since the flush


class StateCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[int, tuple[bytes, ColumnarState]] = OrderedDict()
        self._dirty: dict[tuple[int, int], DirtyUser] = {}     # (partition, user_id) ->
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries) + len(self._dirty)

    # ---- clean entries

    def get(self, user_id: int, blob: bytes) -> ColumnarState | None:
        """The decoded state if the cached one was decoded from exactly `blob`."""
        entry = self._entries.get(user_id)
        if entry is not None and entry[0] == blob:
            self._entries.move_to_end(user_id)
            self.hits += 1
            return entry[1]
        self.misses += 1
        return None

    def put(self, user_id: int, blob: bytes, state: ColumnarState) -> None:
        if self.capacity <= 0:
            return
        self._entries[user_id] = (blob, state)
        self._entries.move_to_end(user_id)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def discard(self, user_id: int) -> None:
        self._entries.pop(user_id, None)

    # ---- dirty entries

    def dirty(self, partition: int, user_id: int) -> DirtyUser | None:
        d = self._dirty.get((partition, user_id))
        if d is not None:
            self.hits += 1
        return d

    def mark_dirty(self, dirty: DirtyUser) -> None:
        """The user's state was advanced: it is the newest until flushed."""
        self._entries.pop(dirty.user_id, None)
        self._dirty[(dirty.partition, dirty.user_id)] = dirty

    @property
    def dirty_count(self) -> int:
        return len(self._dirty)

    def dirty_users(self) -> list[DirtyUser]:
        return list(self._dirty.values())

    def flushed(self) -> list[DirtyUser]:
        """Every dirty entry, now being written: they are no longer dirty (the caller puts
        each back as clean with `put`)."""
        out = list(self._dirty.values())
        self._dirty.clear()
        return out

    def clear(self) -> None:
        self._entries.clear()
        self._dirty.clear()
