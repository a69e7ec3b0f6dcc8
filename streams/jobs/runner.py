"""Scheduled runs (the seed's 定时更新策略) on the partitions this worker owns.

- hourly: re-evaluate the users whose day in the due index has come, at the partition's stream
  time; publish changed profiles (`trigger: "hourly"`); idle users are retired on the way.
- daily: the same for every user whose profile can have changed (all of them when the feature
  config changed, or with `full`), repair due-index entries, compact RocksDB, write a backup.
- weekly: rebuild every user from the event log with the stream's own `apply_events`, compare
  with the live state as of stream time, report drift per feature and correct it.

Jobs run one at a time and take the pipeline's lock per chunk of users, so the agent keeps
running between chunks and never sees a half-updated user.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from zoneinfo import ZoneInfo

from features.drift import compare, empty_drift_counts
from features.encoding import FORMAT_VERSION, decode, encode, patch_header, read_header
from features.events import Rejection, day_of
from features.schedule import (JOBS, NEVER, cron_specs, feature_fingerprint, is_idle,
                               next_change_day, retire)
from features.state import UNKNOWN_DUE, UserState
from features.update import apply_events, mark_published
from streams import backups
from streams.event_log import read_partition
from streams.kafka_security import client_kwargs
from streams.state_table import (FEATURES_KEY, due_key, iter_due, iter_users, move_due,
                                 pack_int, unpack_int, user_key)

log = logging.getLogger(__name__)
CHUNK = 500               # users per hold of the pipeline lock
INDEX_CHECK_INTERVAL = 2.0
RETIRED_BYTES = len(encode(UserState(), 0))     # a state without data encodes to this size   # seconds between looks for partitions whose index is unchecked


class JobBusy(RuntimeError):
    pass


class NotReady(RuntimeError):
    pass


@dataclass
class PartitionRun:
    partition: int
    stream_time: int = -1
    visited: int = 0              # users looked at
    evaluated: int = 0            # users re-evaluated
    published: int = 0            # changed profiles published
    retired: int = 0              # idle users whose data was dropped
    index_repaired: int = 0
    stale_index: int = 0
    full: bool = False            # daily: every user re-evaluated (asked, or config changed)
    aborted: str | None = None    # why the partition stopped early (e.g. revoked)
    drift: dict | None = None     # weekly only


@dataclass
class JobReport:
    job: str
    instance: int
    full: bool = False
    started_at: float = field(default_factory=time.time)
    seconds: float = 0.0
    partitions: list[PartitionRun] = field(default_factory=list)
    backup: str | None = None
    error: str | None = None

    def totals(self) -> dict:
        keys = ("visited", "evaluated", "published", "retired", "index_repaired", "stale_index")
        out = {k: sum(getattr(p, k) for p in self.partitions) for k in keys}
        drifts = [p.drift for p in self.partitions if p.drift]
        if drifts:
            out["drift"] = _sum_drift(drifts)
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["totals"] = self.totals()
        return d


def _sum_drift(drifts: list[dict]) -> dict:
    out: dict = {"users": 0, "state": 0, "corrected": 0, "moved_on": 0, "compared": 0,
                 "features": defaultdict(int), "examples": []}
    for d in drifts:
        for k in ("users", "state", "corrected", "moved_on", "compared"):
            out[k] += d[k]
        for f, n in d["features"].items():
            out["features"][f] += n
        out["examples"] = (out["examples"] + d["examples"])[:20]
    out["features"] = dict(out["features"])
    return out


class ScheduledJobs:
    def __init__(self, pipeline, instance_id: int):
        self.pl = pipeline
        self.instance_id = instance_id
        self.app = pipeline.app
        self.cfg = pipeline.cfg
        self.rt = pipeline.rt
        self.engine = pipeline.rt.engine
        self.tz = pipeline.tz
        self.topic = self.cfg.kafka.topics.user_events
        self.fingerprint = feature_fingerprint(self.cfg)
        self.running: str | None = None
        self.last: dict[str, dict] = {}
        self._job_lock = asyncio.Lock()
        # partitions whose due index was checked against the state headers since assignment
        self.index_checked: set[int] = set()
        self.app.on_partitions_assigned.connect(self._forget_index_checks)
        # checks made before recovery completed may have seen a partition recovery then
        # changed or dropped (streams.faust_compat.table_recovery)
        self.app.on_rebalance_complete.connect(self._forget_index_checks)
        self.app.task(self._check_indexes_forever)
        zone = ZoneInfo(self.cfg.scheduled_update.timezone)
        for spec in cron_specs(self.cfg):
            self.app.crontab(spec.cron, timezone=zone)(self._scheduled(spec.job))

    def _scheduled(self, job: str):
        async def run_scheduled() -> None:
            try:
                await self.run(job)
            except (JobBusy, NotReady) as e:
                log.warning("scheduled %s run skipped: %s", job, e)
        run_scheduled.__name__ = f"scheduled_{job}"
        return run_scheduled

    async def _forget_index_checks(self, *args, **kwargs) -> None:
        self.index_checked.clear()

    async def _check_indexes_forever(self) -> None:
        while not self.app.should_stop:
            await asyncio.sleep(INDEX_CHECK_INTERVAL)
            await self._check_indexes()

    async def _check_indexes(self) -> None:
        """In the background after (re)assignment: rebuild missing due-index entries, so the
        first hourly run after a restart does not pay for it."""
        recovery = self.app.tables.recovery
        if self._job_lock.locked() or not recovery.completed.is_set() or recovery.in_recovery:
            return
        async with self._job_lock:
            self.running = "index check"
            try:
                for p in self.owned():
                    await self._ensure_index(p, PartitionRun(p))
            finally:
                self.running = None

    async def _ensure_index(self, p: int, run: PartitionRun) -> None:
        if p in self.index_checked:
            return

        async def check(db, chunk):
            for key, blob in chunk:
                due = read_header(blob).due_day
                if due >= 0 and db.get(due_key(due, int(key))) is None:
                    db.put(due_key(due, int(key)), b"")
                    run.index_repaired += 1
        if await self._each_chunk(p, run, check):
            self.index_checked.add(p)

    async def _each_chunk(self, p: int, run: PartitionRun, handle) -> bool:
        """Call `await handle(db, [(key, state blob), ...])` for every user of partition p, a
        chunk at a time with the pipeline lock held (the stream runs in between). False when
        the partition was revoked meanwhile."""
        after = b"0"
        while True:
            async with self.pl.lock:
                if p not in self.owned() or self.app.tables.recovery.in_recovery:
                    run.aborted = "partition revoked or recovering"
                    return False
                db = self.pl.states.open_db(p)
                if db is None:
                    run.aborted = "partition database not open"
                    return False
                chunk = []
                for item in iter_users(db, after):
                    chunk.append(item)
                    if len(chunk) >= CHUNK:
                        break
                if not chunk:
                    return True
                after = chunk[-1][0] + b"\x00"
                await handle(db, chunk)
            await asyncio.sleep(0)

    def owned(self) -> list[int]:
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == self.topic)

    async def run(self, job: str, full: bool = False) -> dict:
        """Run one job on every owned partition; returns its report (also kept in `last`)."""
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}; one of {', '.join(JOBS)}")
        if self.running in JOBS:
            raise JobBusy(f"the {self.running} job is running")
        recovery = self.app.tables.recovery
        if not recovery.completed.is_set() or recovery.in_recovery:
            raise NotReady("table recovery is not complete")
        async with self._job_lock:         # (waits for a background index check)
            if self.running in JOBS:
                raise JobBusy(f"the {self.running} job is running")
            self.running = job
            report = JobReport(job, self.instance_id, full)
            t0 = time.perf_counter()
            log.info("%s run started on partitions %s", job, self.owned())
            try:
                for p in self.owned():
                    run = PartitionRun(p, self.pl.clock(p).stream_time)
                    report.partitions.append(run)
                    if job == "hourly":
                        await self._ensure_index(p, run)
                    await getattr(self, f"_{job}")(p, run, full)
                if job == "daily":
                    report.backup = await self._backup(report)
            except Exception as e:          # a failed job is reported, never kills the worker
                log.exception("%s run failed", job)
                report.error = f"{type(e).__name__}: {e}"
            finally:
                self.running = None
                report.seconds = round(time.perf_counter() - t0, 3)
            out = report.to_dict()
            self.last[job] = out
            log.info("%s run done in %.2fs: %s", job, report.seconds, out["totals"])
            return out

    # ------------------------------------------------------------------ hourly

    async def _hourly(self, p: int, run: PartitionRun, full: bool) -> None:
        if run.stream_time < 0:
            return
        today = day_of(run.stream_time, self.tz)
        db = self.pl.states.db(p)
        while True:
            async with self.pl.lock:
                if p not in self.owned() or self.app.tables.recovery.in_recovery:
                    run.aborted = "partition revoked or recovering"
                    return
                entries = []
                for key, day, uid in iter_due(db, today):
                    entries.append((key, day, uid))
                    if len(entries) >= CHUNK:
                        break
                if not entries:
                    return
                await self._revisit(p, entries, run, "hourly")

    async def _revisit(self, p: int, entries: list[tuple[bytes | None, int, int]],
                       run: PartitionRun, trigger: str) -> None:
        """Re-evaluate users at the partition's stream time; `entries` are (due key, due day,
        user id); the key is deleted when it no longer matches the user's due day."""
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
            move_due(db, uid, state, next_change_day(state, day_of(T, tz),
                                                            engine.windows))
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

    # ------------------------------------------------------------------ daily

    async def _daily(self, p: int, run: PartitionRun, full: bool) -> None:
        if run.stream_time < 0:
            return
        today = day_of(run.stream_time, self.tz)
        db = self.pl.states.db(p)
        full = full or unpack_int(db.get(FEATURES_KEY), -1) != self.fingerprint
        run.full = full

        async def deep(db, chunk):
            due_now = []
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
                if h.due_day >= 0 and db.get(due_key(h.due_day, uid)) is None:
                    db.put(due_key(h.due_day, uid), b"")
                    run.index_repaired += 1
            if due_now:
                await self._revisit(p, due_now, run, "daily")

        if not await self._each_chunk(p, run, deep):
            return
        self.index_checked.add(p)
        async with self.pl.lock:
            self.pl.states.set(p, FEATURES_KEY, pack_int(self.fingerprint))
            await self.pl.flush_writes()
        await asyncio.to_thread(db.compact_range, None, None)

    async def _backup(self, report: JobReport) -> str | None:
        parts = [r.partition for r in report.partitions if not r.aborted]
        if not parts:
            return None
        async with self.pl.lock:        # a checkpoint of a quiet store: no batch half-written
            info = backups.create(self.pl.states, parts,
                                  backups.root(self.cfg, self.instance_id),
                                  {p: self.pl.clock(p).pack().hex() for p in parts},
                                  self.instance_id)
        backups.prune(info.path.parent, self.cfg.scheduled_update.backup_retention)
        return info.name

    # ------------------------------------------------------------------ weekly

    async def _weekly(self, p: int, run: PartitionRun, full: bool) -> None:
        upto = self.pl.clock(p).offset
        drift = {"users": 0, "state": 0, "corrected": 0, "moved_on": 0, "compared": 0,
                 "features": empty_drift_counts(self.engine), "examples": [],
                 "log_first_offset": None, "log_upto": upto}
        run.drift = drift
        if upto < 0 or run.stream_time < 0:
            return
        rebuilt: dict[int, UserState] = {}
        first = await self._rebuild(p, None, upto, rebuilt)
        drift["log_first_offset"] = first
        todo = set(rebuilt)
        moved: set[int] = set()

        async def check(db, chunk):
            uids = [int(k) for k, _ in chunk]
            todo.difference_update(uids)
            moved.update(await self._compare(p, uids, rebuilt, upto, run,
                                             trust_missing=first == 0))

        if not await self._each_chunk(p, run, check):
            return
        # users only in the log (their live state is missing)
        async with self.pl.lock:
            moved |= await self._compare(p, sorted(todo), rebuilt, upto, run,
                                         trust_missing=True)
        for _ in range(3):              # users that moved on while we read: catch up, again
            if not moved:
                break
            new_upto = self.pl.clock(p).offset
            await self._rebuild(p, upto + 1, new_upto, rebuilt, only=moved)
            upto = new_upto
            async with self.pl.lock:
                moved = await self._compare(p, sorted(moved), rebuilt, upto, run,
                                            trust_missing=True)
        drift["moved_on"] = len(moved)

    async def _rebuild(self, p: int, start: int | None, upto: int,
                       states: dict[int, UserState], only: set[int] | None = None) -> int | None:
        """Apply the log's events start..upto of partition p to `states`, as the stream did."""
        first = None
        parse = self.rt.parser.parse_message
        now = time.time()
        async for records in read_partition(self.cfg.kafka.bootstrap_servers, self.topic, p,
                                            upto, start,
                                            client_kwargs=client_kwargs(self.cfg)):
            if first is None:
                first = records[0].offset
            by_user = defaultdict(list)
            for r in records:
                ev = parse(r.value, r.key, now) if r.value is not None else None
                if ev is None or type(ev) is Rejection:
                    continue
                if only is None or ev.user_id in only:
                    by_user[ev.user_id].append((r.offset, ev))
            for uid, evs in by_user.items():
                st = states.get(uid)
                if st is None:
                    st = states[uid] = UserState()
                apply_events(self.rt, uid, st, evs, evaluate=False)
            await asyncio.sleep(0)
        return first

    async def _compare(self, p: int, uids: list[int], rebuilt: dict[int, UserState], upto: int,
                       run: PartitionRun, trust_missing: bool) -> set[int]:
        """Compare live with rebuilt for `uids` (pipeline lock held); correct what differs.
        Returns the users whose live state is past `upto` (compare them later)."""
        states, tz, drift = self.pl.states, self.tz, run.drift
        db = states.db(p)
        moved, fixes = set(), []
        for uid in uids:
            blob = states.get(p, user_key(uid))
            live = decode(blob, tz) if blob is not None else UserState()
            if live.source_offset > upto:
                moved.add(uid)
                continue
            target = rebuilt.get(uid, UserState())
            if uid not in rebuilt and not trust_missing:
                continue                    # the log was truncated: nothing to say
            run.visited += 1
            drift["compared"] += 1
            d = compare(self.engine, uid, live, target, run.stream_time)
            if d is None:
                continue
            drift["users"] += 1
            drift["state"] += d.state_differs
            for f in d.features:
                drift["features"][f] = drift["features"].get(f, 0) + 1
            if len(drift["examples"]) < 20:
                drift["examples"].append({"user_id": uid, "features": list(d.features)})
            fixed = UserState(T=target.T, days=target.days, items=target.items,
                              event_ids=target.event_ids,
                              source_offset=max(target.source_offset, live.source_offset),
                              version=live.version, published_digest=live.published_digest,
                              due_day=live.due_day, published_as_of=live.published_as_of)
            profile = d.rebuilt_profile
            changed = profile.digest() != fixed.published_digest
            if changed:
                await self.pl.publish(profile, fixed.version + 1, "weekly")
                run.published += 1
            fixes.append((uid, fixed, profile if changed else None))
        await self.pl.flush_publishes()
        for uid, fixed, profile in fixes:
            if profile is not None:
                mark_published(fixed, profile)
            T = max(run.stream_time, fixed.T)
            move_due(db, uid, fixed, next_change_day(fixed, day_of(T, tz),
                                                            self.engine.windows))
            states.set(p, user_key(uid), encode(fixed, tz))
            drift["corrected"] += 1
        await self.pl.flush_writes()
        return moved
