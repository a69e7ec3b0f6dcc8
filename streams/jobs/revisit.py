"""The hourly and daily runs: users re-evaluated at their partition's stream time, changed
profiles published, days closed by stream time published, idle users retired, and the due
index kept true to the state headers.

- hourly: the users whose day in the due index has come (`trigger: "hourly"`).
- daily: every user whose profile can have changed (all of them when the feature config
  changed, or with `full`), missing due-index entries put back, RocksDB compacted.

A chunk's users are decoded as v3 states (features.columnar: views over the records) and
evaluated in one call; whatever the run writes is a v3 record.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from features import columnar
from features.columnar import ColumnarState
from features.encoding import Header, patch_header, read_header
from features.events import day_of
from features.schedule import NEVER, feature_fingerprint
from features.state import UNKNOWN_DUE
from features.update import day_end, mark_published
from streams.jobs.report import PartitionRun
from streams.state import PartitionStore
from streams.state.owned_chunks import AllUsers, ChunkSource, DueUsers, Handler, OwnedChunks
from streams.state.table_keys import (
    FEATURES_KEY,
    move_due,
    pack_int,
    repair_due,
    unpack_int,
    user_key,
)

if TYPE_CHECKING:
    from features.profile import Profile
    from streams.pipeline.views import JobPipeline

# (due-index key or None, due day, user id, the record if already read)
DueEntry = tuple["bytes | None", int, int, "bytes | None"]


class Revisits:
    def __init__(self, pipeline: JobPipeline, chunks: OwnedChunks):
        self.pl = pipeline
        self.chunks = chunks
        self.engine = pipeline.rt.engine
        self.tz = pipeline.tz
        self.time_windows = pipeline.cfg.behavior_preferences.time_windows
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

        async def check(db: PartitionStore, chunk: list[tuple[bytes, bytes]]) -> None:
            for key, blob in chunk:
                run.index_repaired += repair_due(db, int(key), read_header(blob).due_day)
        if await self.walk(p, run, AllUsers(), check):
            self.index_checked.add(p)

    async def hourly(self, p: int, run: PartitionRun, full: bool) -> None:
        await self.ensure_index(p, run)
        if run.stream_time < 0:
            return

        async def due(db: PartitionStore, entries: list[tuple[bytes, int, int]]) -> None:
            await self.revisit(p, db, [(key, day, uid, None) for key, day, uid in entries],
                               run, "hourly")
        await self.walk(p, run, DueUsers(day_of(run.stream_time, self.tz)), due)

    async def daily(self, p: int, run: PartitionRun, full: bool) -> None:
        if run.stream_time < 0:
            return
        today = day_of(run.stream_time, self.tz)
        db = self.pl.states.store(p)
        full = full or unpack_int(db.get(FEATURES_KEY), -1) != self.fingerprint
        run.full = full

        async def deep(db: PartitionStore, chunk: list[tuple[bytes, bytes]]) -> None:
            if full:                        # every user: no header to look at first
                await self.revisit(p, db, [(None, UNKNOWN_DUE, int(key), blob)
                                           for key, blob in chunk], run, "daily")
                return
            due_now: list[DueEntry] = []
            for key, blob in chunk:
                h = read_header(blob)
                uid = int(key)
                if h.due_day == UNKNOWN_DUE or 0 <= h.due_day <= today or \
                        self._due_day_misses(blob, h, today):
                    due_now.append((None, h.due_day, uid, blob))
                    continue
                run.visited += 1
                run.index_repaired += repair_due(db, uid, h.due_day)
            if due_now:
                await self.revisit(p, db, due_now, run, "daily")

        if not await self.walk(p, run, AllUsers(), deep):
            return
        self.index_checked.add(p)
        async with self.pl.lock:
            self.pl.states.set(p, FEATURES_KEY, pack_int(self.fingerprint))
            await self.pl.flush_writes()
        await asyncio.to_thread(db.compact)

    def _due_day_misses(self, blob: bytes, h: Header, today: int) -> bool:
        """A record whose due day does not cover what is due (the daily run's backstop): data
        with no due day left (idle but not yet retired)."""
        return h.due_day == NEVER and columnar.has_data(blob)

    async def revisit(self, p: int, db: PartitionStore, entries: list[DueEntry], run: PartitionRun,
                      trigger: str) -> None:
        """(Lock held.) Re-evaluate users at the partition's stream time and close their last
        day once stream time has passed it; the due key of an entry is deleted when it no
        longer matches the user's due day."""
        tz = self.tz
        uids: list[int] = []
        blobs: list[bytes] = []
        states: list[ColumnarState] = []
        for key, day, uid, blob in entries:
            run.visited += 1
            if key is not None:             # an entry of the due index: the record is read
                blob = db.get(user_key(uid))
                if blob is None or read_header(blob).due_day != day:
                    db.delete(key)          # left behind by an interrupted move
                    run.stale_index += 1
                    continue                # (the user's own entry, if due, comes too)
            if blob is None:
                continue
            uids.append(uid)
            blobs.append(blob)
            states.append(columnar.decode(blob, tz))
        if not uids:
            return
        as_of = [max(run.stream_time, s.T) for s in states]
        closed = await self._close_days(uids, states, day_of(run.stream_time, tz), run)
        profiles = columnar.changed_profiles(self.engine, uids, states, as_of)
        run.evaluated += len(uids)
        published = any(closed)
        for s, profile in zip(states, profiles):
            if profile is not None:
                await self.pl.publish(profile, s.version + 1, trigger)
                run.published += 1
                published = True
        # The records are delivered before the states that say they were published: a crash in
        # between re-sends the same records (profile version, closed day) on the next run.
        if published:
            await self.pl.flush_publishes()
        dues = columnar.next_change_days(states, [day_of(t, tz) for t in as_of],
                                         self.engine.windows, tz)
        logged = False
        for uid, blob, s, T, profile, was_closed, due in zip(uids, blobs, states, as_of,
                                                             profiles, closed, dues):
            logged |= self._write(p, db, uid, blob, s, T, profile, was_closed, due, run)
        if logged:
            await self.pl.flush_writes()

    async def _close_days(self, uids: list[int], states: list[ColumnarState], today: int,
                          run: PartitionRun) -> list[bool]:
        """Publish the profile-aggregates record of each user's open day that stream time has
        passed (as the stream does when a later event closes it: the day's metrics as of its
        last second) and mark it closed in the state; per user, whether a day was closed."""
        tz = self.tz
        todo = [(i, d) for i, s in enumerate(states)
                if (d := columnar.open_day(s, tz)) is not None and d < today]
        out = [False] * len(states)
        if not todo:
            return out
        metrics = columnar.metrics_many(self.engine, [states[i] for i, _ in todo],
                                        [day_end(d, tz) for _, d in todo], self.time_windows)
        for (i, d), m in zip(todo, metrics):
            await self.pl.publish_aggregates(uids[i], d, m)
            states[i].closed_day = d
            out[i] = True
        run.closed_days += len(todo)
        return out

    def _write(self, p: int, db: PartitionStore, uid: int, blob: bytes, s: ColumnarState, T: int,
               profile: Profile | None, was_closed: bool, due: int, run: PartitionRun) -> bool:
        """The user's record after a revisit: retired when idle; else its header patched (a
        v1/v2 record rewritten whole as v3). Whatever was published goes to the changelog;
        a due day that alone moved is a local write (if it is lost, the user is merely looked
        at again: nothing is published twice); nothing changed, nothing written. Whether it
        wrote to the changelog."""
        states, key = self.pl.states, user_key(uid)
        if profile is not None:
            mark_published(s, profile)
        if s.D and columnar.is_idle(s, T, self.tz):
            move_due(db, uid, s, NEVER)
            retired = columnar.retire(s)
            retired.due_day = NEVER
            states.set(p, key, columnar.encode(retired))
            run.retired += 1
            return True
        moved = due != s.due_day
        move_due(db, uid, s, due)
        logged = profile is not None or was_closed
        if not logged and not moved:
            return False
        record = patch_header(blob, s)
        if logged:
            states.set(p, key, record)
        else:
            db.put(key, record)
        return logged
