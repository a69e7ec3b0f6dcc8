"""Held publishes going out (`real_time_update.update_interval` > 0, features.holdback).

The flush holds a change made within the interval of the user's last publish: the HELD flag
and `published_at` go into the user's state (written in the same commit, so the mark survives
a crash and moves with the partition) and the user into this worker's `HeldUsers`. A timer
here, every TICK seconds whether events come or not:
- indexes each owned partition not indexed since the last rebalance: its users whose state is
  held, read from the state headers a chunk at a time under the pipeline lock;
- drains the held users whose interval has passed: under the pipeline lock, after the agent's
  open checkpoint is committed, up to `max_dirty_users` of them, highest
  `calculate_priority(user_id, events)` first, go into a checkpoint of their own that the
  ordinary flush evaluates, publishes (`trigger: "event"`, as of the latest applied event) and
  writes; records are delivered with the state writes that say so, as any commit's. A crash
  before the state write is delivered leaves the user held: the partition's next owner sends
  the same record (same version, same state) again.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from features.columnar.codec import hold_mark
from features.holdback import Held, HeldUsers, HoldBack
from streams.owned_chunks import AllUsers, OwnedChunks
from streams.pipeline.batch_update import BatchUpdate
from streams.pipeline.lifecycle import BatchLifecycle
from streams.strategy import UpdateStrategy

log = logging.getLogger(__name__)

MAX_TICK = 0.25             # seconds between drains (a quarter of the interval when shorter)


class HeldPublishes:
    def __init__(self, hold: HoldBack, held: HeldUsers, update: BatchUpdate,
                 lifecycle: BatchLifecycle, group: Any, chunks: OwnedChunks,
                 strategy: UpdateStrategy, max_users: int):
        self.hold = hold
        self.held = held
        self.update = update
        self.lifecycle = lifecycle
        self.group = group
        self.chunks = chunks
        self.strategy = strategy
        self.max_users = max_users
        self.tick = max(0.02, min(MAX_TICK, hold.interval / 4))
        self.epoch = 0                  # rebalances seen: an index built across one is redone
        self._priority_failed = False

    def forget(self) -> None:
        """A rebalance: every partition is indexed again from its states."""
        self.epoch += 1
        self.held.forget()

    async def on_revoked(self) -> None:
        """Before the worker rejoins the group: the last drain delivered. (Faust waits for the
        agent's messages in flight; a drain's commit has none, and its state writes must be in
        the changelog before the partition's next owner reads it.)"""
        async with self.lifecycle.lock:
            delivery = self.lifecycle.delivery
        if delivery is not None:
            try:
                await delivery
            except Exception:
                log.exception("delivering held publishes before a rebalance failed; their "
                              "users stay held in the states")

    async def run(self, should_stop: Any) -> None:
        while not should_stop():
            await asyncio.sleep(self.tick)
            try:
                await self.step()
            except Exception:
                log.exception("sending held publishes failed; they stay held and are tried "
                              "again")

    async def step(self) -> None:
        if not self.group.ready():
            return
        await self.index()
        await self.drain()

    async def index(self) -> None:
        """Put each owned partition's held users into the index (once per assignment)."""
        for p in self.group.owned():
            if p in self.held.indexed:
                continue
            epoch = self.epoch
            now_ms = int(time.time() * 1000)
            found = 0

            async def add(db: Any, chunk: list[tuple[bytes, bytes]], p: int = p) -> None:
                nonlocal found
                for key, blob in chunk:
                    held, published_at = hold_mark(blob)
                    if held:
                        self.held.hold(p, int(key), self.hold.due_ms(published_at), now_ms)
                        found += 1
            why = await self.chunks.each(p, AllUsers(), add)
            if why is None and epoch == self.epoch:
                self.held.indexed.add(p)
                if found:
                    log.info("partition %d: %d held users found in its states", p, found)

    async def drain(self) -> asyncio.Task[None] | None:
        """Send the held users whose interval has passed; their commit's delivery task."""
        first = self.held.next_due_ms()
        if first is None or first > time.time() * 1000:
            return None             # (no commit forced on the agent while nobody is due)
        lifecycle = self.lifecycle
        async with lifecycle.lock:
            if self.group.rebalancing:
                return None         # the index is rebuilt once it is over
            await lifecycle.commit_locked()     # what the agent applied goes first
            due = self.held.take_due(int(time.time() * 1000), self.max_users, self._priority)
            due = [h for h in due if self.group.available(h.partition)]
            if not due:
                return None
            return await lifecycle.commit_staged(lambda: self.update.stage_held(due))

    def _priority(self, h: Held) -> float:
        try:
            return float(self.strategy.calculate_priority(h.user_id, h.events))
        except Exception:
            if not self._priority_failed:
                self._priority_failed = True
                log.exception("update strategy: calculate_priority failed; held users go out "
                              "in due order")
            return 0.0

    def oldest_age(self) -> float:
        """Seconds the user held longest has waited (0: none held)."""
        since = self.held.oldest_since()
        return 0.0 if since is None else max(0.0, time.time() - since / 1000)
