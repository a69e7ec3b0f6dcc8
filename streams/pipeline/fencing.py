"""Fencing, as far as the framework allows (no transactions on the embedded broker): after the
whole process was paused longer than the session timeout, the group has evicted this worker
and given its partitions to others, which redo the events from the last commit. Until this
worker rejoins (a new consumer generation), every batch is a zombie's: its outputs are dropped
(its late commit is refused for the old generation). docs/RELIABILITY.md says what it cannot
stop."""
from __future__ import annotations

import logging
import time
from typing import Protocol

from streams.counters import WorkerCounts

log = logging.getLogger(__name__)


class Pauses(Protocol):
    """streams.pause_watch.PauseWatch"""
    def longest_pause_since(self, since: float) -> float: ...


class Fence:
    def __init__(self, pauses: Pauses, session_timeout: float, counts: WorkerCounts,
                 enabled: bool = True):
        self.pauses = pauses
        # a pause this long means the broker has evicted this worker (heartbeats stopped)
        self.fence_seconds = session_timeout + 2.0
        self.counts = counts
        self.enabled = enabled
        self._last_ok = time.monotonic()        # when the last batch was delivered ...
        self._ok_generation: int | None = None  # ... and in which consumer generation
        self._fenced_generation: int | None = None

    def delivered(self, generation: int | None) -> None:
        """A batch's outputs were delivered in this generation."""
        self._last_ok, self._ok_generation = time.monotonic(), generation

    def fenced(self, started: float, n_events: int, generation: int | None) -> bool:
        """Whether the batch whose compute began at monotonic time `started` must emit
        nothing (counted as fenced)."""
        if not self.enabled:
            return False
        if self._fenced_generation is not None:
            if generation == self._fenced_generation:
                self._count(n_events)
                return True
            self._fenced_generation = None
            log.warning("rejoined the group (generation %s): processing again", generation)
        # A pause before the last rebalance is over: this batch belongs to the new assignment.
        since = min(self._last_ok, started) if generation == self._ok_generation else started
        pause = self.pauses.longest_pause_since(since)
        if pause <= self.fence_seconds:
            return False
        self._fenced_generation = generation
        self._count(n_events)
        log.warning("the process was paused %.1f s (session timeout %.0f s): this worker lost "
                    "its partitions; outputs dropped until it rejoins", pause,
                    self.fence_seconds - 2)
        return True

    def _count(self, n_events: int) -> None:
        self.counts.fenced_batches += 1
        self.counts.fenced_events += n_events
