"""The weekly run: every user of a partition rebuilt from the event log with the stream's own
`apply_events` (on the v3 layout, features.columnar), compared with the live state as of stream
time; drift reported per feature and corrected (a changed profile published with
`trigger: "weekly"`)."""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from features import columnar
from features.columnar import ColumnarState
from features.drift import compare_columnar, empty_drift_counts
from features.event_columns import parse_batch
from features.events import Event, day_of
from features.update import mark_published
from streams.io.event_log import read_partition
from streams.io.kafka_security import client_kwargs
from streams.jobs.report import DriftReport, PartitionRun
from streams.state.owned_chunks import AllUsers, OwnedChunks
from streams.state.table_keys import move_due, user_key

if TYPE_CHECKING:
    from streams.pipeline.views import JobPipeline

CATCH_UP_ROUNDS = 3


class WeeklyRebuild:
    def __init__(self, pipeline: JobPipeline, chunks: OwnedChunks):
        self.pl = pipeline
        self.chunks = chunks
        self.rt = pipeline.rt
        self.engine = pipeline.rt.engine
        self.tz = pipeline.tz
        self.cfg = pipeline.cfg
        self.topic = pipeline.cfg.kafka.topics.user_events

    async def weekly(self, p: int, run: PartitionRun, full: bool) -> None:
        upto = self.pl.clock(p).offset
        drift = run.drift = DriftReport(features=empty_drift_counts(self.engine), log_upto=upto)
        if upto < 0 or run.stream_time < 0:
            return
        rebuilt: dict[int, ColumnarState] = {}
        first = await self.rebuild(p, None, upto, rebuilt)
        drift.log_first_offset = first
        todo = set(rebuilt)
        moved: set[int] = set()

        async def check(db: Any, chunk: list[tuple[bytes, bytes]]) -> None:
            uids = [int(k) for k, _ in chunk]
            todo.difference_update(uids)
            moved.update(await self.compare(p, uids, rebuilt, upto, run,
                                            trust_missing=first == 0))

        why = await self.chunks.each(p, AllUsers(), check)
        if why is not None:
            run.aborted = why
            return
        # users only in the log (their live state is missing)
        async with self.pl.lock:
            moved |= await self.compare(p, sorted(todo), rebuilt, upto, run, trust_missing=True)
        for _ in range(CATCH_UP_ROUNDS):    # users that moved on while we read: catch up again
            if not moved:
                break
            new_upto = self.pl.clock(p).offset
            await self.rebuild(p, upto + 1, new_upto, rebuilt, only=moved)
            upto = new_upto
            async with self.pl.lock:
                moved = await self.compare(p, sorted(moved), rebuilt, upto, run,
                                           trust_missing=True)
        drift.moved_on = len(moved)

    async def rebuild(self, p: int, start: int | None, upto: int,
                      states: dict[int, ColumnarState],
                      only: set[int] | None = None) -> int | None:
        """Apply the log's events start..upto of partition p to `states`, as the stream did;
        returns the first offset read (None: the log had nothing there)."""
        first = None
        parser = self.rt.parser
        now = time.time()
        async for records in read_partition(self.cfg.kafka.bootstrap_servers, self.topic, p,
                                            upto, start,
                                            client_kwargs=client_kwargs(self.cfg)):
            if first is None:
                first = records[0].offset
            by_user: dict[int, list[tuple[int, Event]]] = defaultdict(list)
            parsed = parse_batch(parser, [r.value for r in records], [r.key for r in records],
                                 now)
            for i, ev in parsed.events:         # (the stream's validation, dead letters aside)
                if only is None or ev.user_id in only:
                    by_user[ev.user_id].append((records[i].offset, ev))
            for uid, evs in by_user.items():
                st = states.get(uid)
                if st is None:
                    st = states[uid] = ColumnarState.new()
                columnar.apply_events(self.rt, uid, st, evs, evaluate=False)
            await asyncio.sleep(0)
        return first

    async def compare(self, p: int, uids: list[int], rebuilt: dict[int, ColumnarState],
                      upto: int, run: PartitionRun, trust_missing: bool) -> set[int]:
        """(Lock held.) Compare live with rebuilt for `uids`; correct what differs. Returns the
        users whose live state is past `upto` (compare them later)."""
        states, tz, drift = self.pl.states, self.tz, run.drift
        assert drift is not None
        db = states.store(p)
        moved, fixes = set(), []
        for uid in uids:
            blob = db.get(user_key(uid))
            live = columnar.decode(blob, tz) if blob is not None else ColumnarState.new()
            if live.source_offset > upto:
                moved.add(uid)
                continue
            target = rebuilt.get(uid) or ColumnarState.new()
            if uid not in rebuilt and not trust_missing:
                continue                    # the log was truncated: nothing to say
            run.visited += 1
            drift.compared += 1
            d = compare_columnar(self.engine, uid, live, target, run.stream_time)
            if d is None:
                continue
            drift.differs(d)
            # the rebuilt data with the live bookkeeping (versions, what was published)
            fixed = target.copy()
            fixed.source_offset = max(target.source_offset, live.source_offset)
            fixed.version, fixed.published_digest = live.version, live.published_digest
            fixed.due_day, fixed.published_as_of = live.due_day, live.published_as_of
            fixed.closed_day = live.closed_day
            fixed.published_at, fixed.held = live.published_at, live.held
            profile = d.rebuilt_profile
            changed = profile.digest() != fixed.published_digest
            if changed:
                await self.pl.publish(profile, fixed.version + 1, "weekly")
                run.published += 1
            fixes.append((uid, fixed, profile if changed else None))
        await self.pl.flush_publishes()
        for uid, fixed, published in fixes:
            if published is not None:
                mark_published(fixed, published)
            T = max(run.stream_time, fixed.T)
            move_due(db, uid, fixed, columnar.next_change_day(fixed, day_of(T, tz),
                                                              self.engine.windows, tz))
            states.set(p, user_key(uid), columnar.encode(fixed))
            drift.corrected += 1
        await self.pl.flush_writes()
        return moved
