"""Each partition's clock (stream time and last offset processed, table key PARTITION_KEY),
cached; forgotten on every rebalance, since another worker may have moved a partition on and
recovery rewrites them (streams.faust_compat.table_recovery may even drop a partition)."""
from __future__ import annotations

from typing import Protocol

from streams.state import PartitionStore
from streams.state.table_keys import PARTITION_KEY, PartitionClock


class PartitionStores(Protocol):
    def store(self, partition: int) -> PartitionStore: ...


class PartitionClocks:
    def __init__(self, states: PartitionStores):
        self.states = states
        self._clocks: dict[int, PartitionClock] = {}

    def get(self, partition: int) -> PartitionClock:
        """The partition's stream time and last offset processed, as stored with its states."""
        clock = self._clocks.get(partition)
        if clock is None:
            raw = self.states.store(partition).get(PARTITION_KEY)
            clock = self._clocks[partition] = PartitionClock.unpack(raw)
        return clock

    def set(self, partition: int, clock: PartitionClock) -> None:
        self._clocks[partition] = clock

    def forget(self) -> None:
        self._clocks.clear()
