"""Fencing, as far as the framework allows without Kafka transactions. A worker stops emitting
when the group may have given its partitions to another worker, which redoes the events from
the last commit:
- the whole process was paused longer than the session timeout (SIGSTOP, a frozen VM);
- the group coordinator has not confirmed this worker's membership (a heartbeat answered, an
  assignment) for half the session timeout: the broker paused or out of reach. A worker the
  broker expired goes on emitting what it had fetched until its next heartbeat fails, while the
  new owner already publishes; half the session timeout leaves what was handed to the producer
  before the time to arrive first.
Until a rebalance has begun or an assignment has arrived since (this worker asks for a rejoin:
the broker may not have expired it), every batch is a zombie's: its outputs are dropped and its
events are not acked (they come again from the last commit). docs/RELIABILITY.md says what it
cannot stop."""
from __future__ import annotations

import logging
import time
from typing import Protocol

from streams.monitoring.counters import WorkerCounts

log = logging.getLogger(__name__)


class Pauses(Protocol):
    """streams.process.pause_watch.PauseWatch"""
    def longest_pause_since(self, since: float) -> float: ...


class Membership(Protocol):
    """streams.faust_compat.membership.MembershipWatch"""
    joins: int          # assignments received: after one, positions are the committed offsets

    def confirmed_at(self) -> float: ...

    def request_rejoin(self) -> None: ...


class Fence:
    def __init__(self, pauses: Pauses, session_timeout: float, counts: WorkerCounts,
                 enabled: bool = True, membership: Membership | None = None):
        self.pauses = pauses
        # a pause this long means the broker has evicted this worker (heartbeats stopped)
        self.fence_seconds = session_timeout + 2.0
        # unconfirmed this long, the broker may expire this worker before what is emitted now
        # reaches it
        self.unconfirmed_seconds = session_timeout / 2
        self.membership = membership
        self.counts = counts
        self.enabled = enabled
        self._last_ok = time.monotonic()        # when the last batch was delivered ...
        self._ok_generation: int | None = None  # ... and in which consumer generation
        # (generation, rebalances begun, assignments) when fenced: fenced until one changes
        self._fenced_at: tuple[int | None, int | None, int | None] | None = None

    def delivered(self, generation: int | None) -> None:
        """A batch's outputs were delivered in this generation."""
        self._last_ok, self._ok_generation = time.monotonic(), generation

    def fenced(self, started: float, n_events: int, generation: int | None,
               rebalances: int | None = None) -> bool:
        """Whether the batch whose compute began at monotonic time `started` must emit
        nothing (counted as fenced). `rebalances`: how many rebalances the group has begun."""
        if not self.enabled:
            return False
        joins = None if self.membership is None else self.membership.joins
        if self._fenced_at is not None:
            if (generation, rebalances, joins) == self._fenced_at:
                self._count(n_events)
                return True
            self._fenced_at = None
            log.warning("rejoined the group (generation %s): processing again", generation)
        reason = self._zombie(started, generation)
        if reason is None:
            return False
        self._fenced_at = (generation, rebalances, joins)
        self._count(n_events)
        log.warning("%s: this worker may have lost its partitions; outputs dropped until it "
                    "rejoins", reason)
        if self.membership is not None:
            self.membership.request_rejoin()
        return True

    def _zombie(self, started: float, generation: int | None) -> str | None:
        # A pause before the last rebalance is over: this batch belongs to the new assignment.
        since = min(self._last_ok, started) if generation == self._ok_generation else started
        pause = self.pauses.longest_pause_since(since)
        if pause > self.fence_seconds:
            return (f"the process was paused {pause:.1f} s (session timeout "
                    f"{self.fence_seconds - 2:.0f} s)")
        if self.membership is not None:
            unconfirmed = time.monotonic() - self.membership.confirmed_at()
            if unconfirmed > self.unconfirmed_seconds:
                return (f"the group coordinator has not confirmed this worker for "
                        f"{unconfirmed:.1f} s (session timeout "
                        f"{2 * self.unconfirmed_seconds:.0f} s)")
        return None

    def _count(self, n_events: int) -> None:
        self.counts.fenced_batches += 1
        self.counts.fenced_events += n_events
