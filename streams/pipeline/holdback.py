"""Held publishes going out (`real_time_update.update_interval` > 0, features.holdback).

The flush holds a change made within the interval of the user's last publish: the HELD flag
and `published_at` go into the user's state (written in the same commit, so the mark survives
a crash and moves with the partition) and the user into this worker's `HeldUsers`. A timer
here, every TICK seconds whether events come or not:
- indexes each owned partition not indexed since the last rebalance: its users whose state is
  held, read from the state headers a chunk at a time under the pipeline lock;
- when held users are due and the agent has no checkpoint open (an idle stream), commits an
  empty checkpoint under the pipeline lock. Every flush (the agent's or this one) first takes
  the due users, up to `max_dirty_users`, highest `calculate_priority(user_id, events)` first
  (streams.pipeline.batch_update): it evaluates them, publishes (`trigger: "event"`, as of the
  latest applied event) and writes them; records are delivered with the state writes that say
  so, as any commit's. A crash before the state write is delivered leaves the user held: the
  partition's next owner sends the same record (same version, same state) again.

The hold-back in the stream; its rule is features/holdback.py.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from features.columnar.codec import hold_mark
from features.holdback import HeldUsers, HoldBack
from streams.pipeline.lifecycle import BatchLifecycle
from streams.state.owned_chunks import AllUsers, OwnedChunks

log = logging.getLogger(__name__)

MAX_TICK = 0.25             # seconds between drains (a quarter of the interval when shorter)


class HeldPublishes:
    def __init__(self, hold: HoldBack, held: HeldUsers, lifecycle: BatchLifecycle, group: Any,
                 chunks: OwnedChunks):
        self.hold = hold
        self.held = held
        self.lifecycle = lifecycle
        self.group = group
        self.chunks = chunks
        self.tick = max(0.02, min(MAX_TICK, hold.interval / 4))
        self.epoch = 0                  # rebalances seen: an index built across one is redone

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
        """Commit for the held users due for a tick already when the agent has nothing open
        (while events flow, its commits take them first); the commit's delivery task."""
        first = self.held.next_due_ms()
        if first is None or first > time.time() * 1000 - self.tick * 1000 or \
                self.lifecycle.checkpoint is not None:
            return None             # (no commit forced on the agent)
        lifecycle = self.lifecycle
        async with lifecycle.lock:
            if self.group.rebalancing or lifecycle.checkpoint is not None:
                return None         # the index is rebuilt once it is over / the agent commits
            return await lifecycle.commit_staged(lambda: None)     # the flush takes them

    def oldest_age(self) -> float:
        """Seconds the user held longest has waited (0: none held)."""
        since = self.held.oldest_since()
        return 0.0 if since is None else max(0.0, time.time() - since / 1000)
