"""The hourly and daily runs: users re-evaluated at their partition's stream time, changed
profiles published, idle users retired, and the due index kept true to the state headers.

- hourly: the users whose day in the due index has come (`trigger: "hourly"`).
- daily: every user whose profile can have changed (all of them when the feature config
  changed, or with `full`), missing due-index entries put back, RocksDB compacted.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from features.encoding import FORMAT_VERSION, decode, encode, patch_header, read_header
from features.events import day_of
from features.schedule import NEVER, feature_fingerprint, is_idle, next_change_day, retire
from features.state import UNKNOWN_DUE, UserState
from features.update import mark_published
from streams.jobs.report import PartitionRun
from streams.owned_chunks import AllUsers, ChunkSource, DueUsers, Handler, OwnedChunks
from streams.state_table import FEATURES_KEY, move_due, pack_int, repair_due, unpack_int, user_key

if TYPE_CHECKING:
    from streams.pipeline.profile_pipeline import ProfilePipeline

RETIRED_BYTES = len(encode(UserState(), 0))     # a state without data encodes to this size
DueEntry = tuple["bytes | None", int, int]      # (due-index key or None, due day, user id)


class Revisits:
    def __init__(self, pipeline: ProfilePipeline, chunks: OwnedChunks):
        self.pl = pipeline
        self.chunks = chunks
        self.engine = pipeline.rt.engine
        self.tz = pipeline.tz
        self.fingerprint = feature_fingerprint(pipeline.cfg)
        # partitions whose due index was checked against the state headers since assignment
        self.index_checked: set[int] = set()

    async def walk(self, p: int, run: PartitionRun, source: ChunkSource, handle: Handler) -> bool:
        """OwnedChunks.each; False (and the run says why) when the partition stopped early."""
        why = await self.chunks.each(p, source, handle)
        if why is not None:
            run.aborted = why
        return why is None

    async def ensure_index(self, p: int, run: PartitionRun) -> None:
        """Put back the partition's missing due-index entries (once after each assignment)."""
        if p in self.index_checked:
            return

        async def check(db: Any, chunk: list[tuple[bytes, bytes]]) -> None:
            for key, blob in chunk:
                run.index_repaired += repair_due(db, int(key), read_header(blob).due_day)
        if await self.walk(p, run, AllUsers(), check):
            self.index_checked.add(p)

    async def hourly(self, p: int, run: PartitionRun, full: bool) -> None:
        await self.ensure_index(p, run)
        if run.stream_time < 0:
            return

        async def due(db: Any, entries: list[DueEntry]) -> None:
            await self.revisit(p, entries, run, "hourly")
        await self.walk(p, run, DueUsers(day_of(run.stream_time, self.tz)), due)

    async def daily(self, p: int, run: PartitionRun, full: bool) -> None:
        if run.stream_time < 0:
            return
        today = day_of(run.stream_time, self.tz)
        db = self.pl.states.db(p)
        full = full or unpack_int(db.get(FEATURES_KEY), -1) != self.fingerprint
        run.full = full

        async def deep(db: Any, chunk: list[tuple[bytes, bytes]]) -> None:
            due_now: list[DueEntry] = []
            for key, blob in chunk:
                h = read_header(blob)
                uid = int(key)
                # (data with no due day left: idle but not yet retired, a backstop)
                dataless = len(blob) <= RETIRED_BYTES
                if full or h.due_day == UNKNOWN_DUE or 0 <= h.due_day <= today or \
                        (h.due_day == NEVER and not dataless):
                    due_now.append((None, h.due_day, uid))
                    continue
                run.visited += 1
                run.index_repaired += repair_due(db, uid, h.due_day)
            if due_now:
                await self.revisit(p, due_now, run, "daily")

        if not await self.walk(p, run, AllUsers(), deep):
            return
        self.index_checked.add(p)
        async with self.pl.lock:
            self.pl.states.set(p, FEATURES_KEY, pack_int(self.fingerprint))
            await self.pl.flush_writes()
        await asyncio.to_thread(db.compact_range, None, None)

    async def revisit(self, p: int, entries: list[DueEntry], run: PartitionRun,
                      trigger: str) -> None:
        """(Lock held.) Re-evaluate users at the partition's stream time; the due key of an
        entry is deleted when it no longer matches the user's due day."""
        states, engine, tz = self.pl.states, self.engine, self.tz
        db = states.db(p)
        todo = []
        for key, day, uid in entries:
            run.visited += 1
            blob = states.get(p, user_key(uid))
            due = read_header(blob).due_day if blob is not None else None
            if key is not None and due != day:
                db.delete(key)              # left behind by an interrupted move
                run.stale_index += 1
                continue                    # (the user's own entry, if due, comes too)
            if blob is None:
                continue
            state = decode(blob, tz, event_ids=False)
            T = max(run.stream_time, state.T)
            profile = engine.evaluate(uid, state, T)
            run.evaluated += 1
            changed = profile.digest() != state.published_digest
            if changed:
                await self.pl.publish(profile, state.version + 1, trigger)
                run.published += 1
            todo.append((uid, blob, state, T, profile if changed else None))
        # The records are delivered before the states that say they were published: a crash in
        # between re-sends the same version on the next run.
        await self.pl.flush_publishes()
        for uid, blob, state, T, profile in todo:
            if profile is not None:
                mark_published(state, profile)
            if is_idle(state, T, tz):
                move_due(db, uid, state, NEVER)
                states.set(p, user_key(uid), encode(retire(state), tz))
                run.retired += 1
                continue
            move_due(db, uid, state, next_change_day(state, day_of(T, tz), engine.windows))
            if blob[0] != FORMAT_VERSION:   # an older format: rewrite it whole
                whole = decode(blob, tz)
                whole.version, whole.published_digest = state.version, state.published_digest
                whole.due_day, whole.published_as_of = state.due_day, state.published_as_of
                states.set(p, user_key(uid), encode(whole, tz))
            elif profile is not None:
                states.set(p, user_key(uid), patch_header(blob, state))
            else:
                # only the due day moved: a local write is enough (if it is lost, the user
                # is merely looked at again; nothing is published twice)
                db.put(user_key(uid), patch_header(blob, state))
        await self.pl.flush_writes()
