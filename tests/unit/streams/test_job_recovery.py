"""Scheduled runs and table recovery: a run waits (bounded) for recovery to end, and a partition a
recovery interrupts while it stays the worker's is run again; `profiles status` names the
partitions still recovering and does not call such a cluster healthy."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from deploy.cluster_status import DEGRADED, ClusterStatus, WorkerStatus, render, verdict
from streams.jobs import runner
from streams.jobs.runner import ScheduledJobs
from streams.state.owned_chunks import REVOKED


class FakeJobs:
    """What ScheduledJobs' partition loop uses of itself."""

    def __init__(self, aborts: list[str | None], owned=(4,), ready_after: int = 0):
        self.aborts = list(aborts)
        self.runs = 0
        self._owned = list(owned)
        self.readiness_checks = 0
        self.ready_after = ready_after
        self.pl = SimpleNamespace(clock=lambda p: SimpleNamespace(stream_time=100))
        self.group = SimpleNamespace(ready=self._ready)
        self.per_partition = {"daily": self._daily}

    def _ready(self) -> bool:
        self.readiness_checks += 1
        return self.readiness_checks > self.ready_after

    def owned(self) -> list[int]:
        return self._owned

    async def _daily(self, p, run, full) -> None:
        self.runs += 1
        run.visited = 10
        run.aborted = self.aborts.pop(0) if self.aborts else None

    async def wait_recovered(self, wait: float = 1.0) -> bool:
        return await ScheduledJobs.wait_recovered(self, wait)       # type: ignore[arg-type]


def run_partition(jobs: FakeJobs, p: int = 4):
    return asyncio.run(ScheduledJobs.run_partition(jobs, "daily", p, False))  # type: ignore


def test_a_partition_a_recovery_interrupts_is_run_again_once_it_is_over():
    jobs = FakeJobs([REVOKED, None], ready_after=3)
    run = run_partition(jobs)
    assert jobs.runs == 2 and run.aborted is None and run.visited == 10
    assert jobs.readiness_checks == 4           # it waited for the recovery to end


def test_a_partition_that_moved_or_keeps_being_interrupted_is_reported_not_run(monkeypatch):
    moved = FakeJobs([REVOKED, None], owned=())
    assert run_partition(moved).aborted == REVOKED and moved.runs == 1
    stuck = FakeJobs([REVOKED] * 5)
    assert run_partition(stuck).aborted == REVOKED and stuck.runs == runner.PARTITION_ATTEMPTS
    other = FakeJobs(["partition database not open", None])
    assert run_partition(other).aborted == "partition database not open" and other.runs == 1


def test_waiting_for_recovery_is_bounded():
    jobs = FakeJobs([], ready_after=10 ** 9)
    assert asyncio.run(ScheduledJobs.wait_recovered(jobs, 0.3)) is False    # type: ignore


def test_status_names_recovering_partitions_and_calls_the_cluster_degraded():
    ok = WorkerStatus(1, "http://a:1", 11, True, health={"status": "ok"},
                      monitor=_monitor([0, 1, 2]))
    busy = WorkerStatus(2, "http://b:1", 12, True,
                        health={"status": "recovering", "recovering_partitions": [4]},
                        monitor=_monitor([3, 4, 5]))
    status = ClusterStatus(None, False, [ok, busy], partitions=6, asked="http://a:1",
                           generation=3)
    assert status.recovering() == [4] and status.unowned() == []
    code, reasons = verdict(status)
    assert code == DEGRADED and "worker 2 (http://b:1) is recovering (partitions 4)" in reasons
    text = "\n".join(render(status))
    assert "2 of 2 workers answering" in text and "6 of 6 partitions assigned" in text
    assert "  recovering 4  partitions 3,4,5" in text
    assert "partitions recovering (restored from their changelog; scheduled runs wait for " \
           "them): 4" in text


def _monitor(partitions: list[int]) -> dict:
    return {"partitions": partitions, "lag": {}, "alerts": [],
            "rates": {"events_per_second": 0, "publishes_per_second": 0, "dlq_rate": 0},
            "quality_scan": {"users": 0}}
