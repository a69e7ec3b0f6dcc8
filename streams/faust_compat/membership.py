"""When the group coordinator last confirmed that this worker is a member of the group, and a way
to ask for a rejoin: what fencing needs to know beyond a paused process (streams.pipeline.fencing).

A worker that is not paused can still be dropped by the broker: the broker paused, or every
connection to it down, for longer than the session timeout. When the broker answers again it
has expired the member and may give its partitions to another worker at once, while this one
goes on processing what it had fetched and emitting until its next heartbeat fails
(docs/RELIABILITY.md, "A worker the broker dropped stops emitting").

The proof of membership is the send time of the last heartbeat the coordinator answered without
error (a member in a group that is rebalancing is still one until it rejoins), or the end of the
last join (an assignment). This reaches into aiokafka 0.x: `GroupCoordinator._do_heartbeat` (one
heartbeat; True when the coordinator accepted it) and `request_rejoin`, on the coordinator our
consumer thread's AIOKafkaConsumer keeps in `_coordinator`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

log = logging.getLogger(__name__)


class MembershipWatch:
    def __init__(self) -> None:
        self._confirmed = time.monotonic()
        self.joins = 0                  # assignments received (each after a completed join)
        self._coordinator: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def confirmed_at(self) -> float:
        """Monotonic time at which the coordinator last knew this worker as a member."""
        return self._confirmed

    def joined(self) -> None:
        """An assignment arrived: the join that gave it has just completed."""
        self._confirmed = max(self._confirmed, time.monotonic())
        self.joins += 1

    def attach(self, consumer: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Watch the heartbeats of `consumer` (an aiokafka AIOKafkaConsumer, started), whose
        coroutines run on `loop` (the consumer thread's)."""
        coordinator: Any = getattr(consumer, "_coordinator", None)
        beat = getattr(coordinator, "_do_heartbeat", None)
        if beat is None:        # no group (group_id None) or another aiokafka
            log.warning("membership watch not attached: the consumer has no group coordinator "
                        "with _do_heartbeat (aiokafka changed?); fencing falls back to process "
                        "pauses only")
            return

        async def heartbeat() -> bool:
            sent = time.monotonic()
            ok = await beat()
            if ok:
                self._confirmed = max(self._confirmed, sent)
            return bool(ok)

        coordinator._do_heartbeat = heartbeat
        self._coordinator, self._loop = coordinator, loop

    def request_rejoin(self) -> None:
        """Ask the coordinator to rejoin the group (a rebalance; positions go back to the
        committed offsets). Safe from any thread."""
        coordinator, loop = self._coordinator, self._loop
        if coordinator is None or loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(coordinator.request_rejoin)
