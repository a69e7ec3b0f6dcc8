"""Scheduled runs (the seed's 定时更新策略) on the partitions this worker owns.

- hourly, daily (streams.jobs.revisit): re-evaluate the users whose profile can have changed at
  the partition's stream time, publish changed profiles, retire idle users; the daily run also
  repairs the due index, compacts RocksDB and writes a backup.
- weekly (streams.jobs.weekly): rebuild every user from the event log, report drift per
  feature and correct it.

Jobs run one at a time and take the pipeline's lock per chunk of users (streams.state.owned_chunks),
so the agent keeps running between chunks and never sees a half-updated user. A run waits up to
RECOVERY_WAIT seconds for table recovery (a rebalance restores partitions from their
changelogs); a partition a recovery interrupts while it stays this worker's is run again once
the recovery is over (the report keeps the run that finished).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from zoneinfo import ZoneInfo

from features.schedule import JOBS, cron_specs
from streams.jobs.report import JobReport, PartitionRun
from streams.jobs.revisit import Revisits
from streams.jobs.weekly import WeeklyRebuild
from streams.state import backups
from streams.state.owned_chunks import REVOKED, OwnedChunks

if TYPE_CHECKING:
    from streams.pipeline.views import JobPipeline

log = logging.getLogger(__name__)
INDEX_CHECK_INTERVAL = 2.0      # seconds between looks for partitions whose index is unchecked
RECOVERY_WAIT = 120.0           # seconds a run waits for table recovery, each time it waits
PARTITION_ATTEMPTS = 3          # runs of a partition that recoveries keep interrupting


class JobBusy(RuntimeError):
    pass


class NotReady(RuntimeError):
    pass


class ScheduledJobs:
    def __init__(self, pipeline: JobPipeline, instance_id: int):
        self.pl = pipeline
        self.instance_id = instance_id
        self.app = pipeline.app
        self.cfg = pipeline.cfg
        self.group = pipeline.group
        self.chunks = OwnedChunks(pipeline.group, pipeline.states, pipeline.lock)
        self.revisits = Revisits(pipeline, self.chunks)
        self.weekly = WeeklyRebuild(pipeline, self.chunks)
        self.per_partition: dict[str, Callable[[int, PartitionRun, bool], Awaitable[None]]] = {
            "hourly": self.revisits.hourly, "daily": self.revisits.daily,
            "weekly": self.weekly.weekly}
        self.running: str | None = None
        self.last: dict[str, dict[str, Any]] = {}
        self._job_lock = asyncio.Lock()
        self.app.on_partitions_assigned.connect(self._forget_index_checks)
        # checks made before recovery completed may have seen a partition recovery then
        # changed or dropped (streams.faust_compat.table_recovery)
        self.app.on_rebalance_complete.connect(self._forget_index_checks)
        self.app.task(self._check_indexes_forever)
        zone = ZoneInfo(self.cfg.scheduled_update.timezone)
        for spec in cron_specs(self.cfg):
            self.app.crontab(spec.cron, timezone=zone)(self._scheduled(spec.job))

    @property
    def index_checked(self) -> set[int]:
        """Partitions whose due index was checked against the state headers since assignment."""
        return self.revisits.index_checked

    def owned(self) -> list[int]:
        return self.group.owned()

    def _scheduled(self, job: str) -> Callable[[], Awaitable[None]]:
        async def run_scheduled() -> None:
            try:
                await self.run(job)
            except (JobBusy, NotReady) as e:
                log.warning("scheduled %s run skipped: %s", job, e)
        run_scheduled.__name__ = f"scheduled_{job}"
        return run_scheduled

    async def _forget_index_checks(self, *args: Any, **kwargs: Any) -> None:
        self.index_checked.clear()

    async def _check_indexes_forever(self) -> None:
        while not self.app.should_stop:
            await asyncio.sleep(INDEX_CHECK_INTERVAL)
            await self._check_indexes()

    async def _check_indexes(self) -> None:
        """In the background after (re)assignment: rebuild missing due-index entries, so the
        first hourly run after a restart does not pay for it."""
        if self._job_lock.locked() or not self.group.ready():
            return
        async with self._job_lock:
            self.running = "index check"
            try:
                for p in self.owned():
                    await self.revisits.ensure_index(p, PartitionRun(p))
            finally:
                self.running = None

    async def run(self, job: str, full: bool = False) -> dict[str, Any]:
        """Run one job on every owned partition; returns its report (also kept in `last`)."""
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}; one of {', '.join(JOBS)}")
        if self.running in JOBS:
            raise JobBusy(f"the {self.running} job is running")
        if not await self.wait_recovered():
            raise NotReady(f"table recovery is not complete after {RECOVERY_WAIT:.0f} s")
        async with self._job_lock:         # (waits for a background index check)
            if self.running in JOBS:
                raise JobBusy(f"the {self.running} job is running")
            self.running = job
            report = JobReport(job, self.instance_id, full)
            t0 = time.perf_counter()
            log.info("%s run started on partitions %s", job, self.owned())
            try:
                for p in self.owned():
                    report.partitions.append(await self.run_partition(job, p, full))
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

    async def wait_recovered(self, wait: float = RECOVERY_WAIT) -> bool:
        """Whether table recovery is over, waiting up to `wait` seconds for it."""
        deadline = time.monotonic() + wait
        while not self.group.ready():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    async def run_partition(self, job: str, p: int, full: bool) -> PartitionRun:
        run = PartitionRun(p)
        for attempt in range(1, PARTITION_ATTEMPTS + 1):
            run = PartitionRun(p, self.pl.clock(p).stream_time)
            await self.per_partition[job](p, run, full)
            if run.aborted != REVOKED or attempt == PARTITION_ATTEMPTS:
                return run
            if not await self.wait_recovered() or p not in self.owned():
                return run                      # revoked (or a recovery that does not end)
            log.info("%s run of partition %d interrupted by a table recovery: again", job, p)
        return run

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
