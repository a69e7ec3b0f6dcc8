"""What a scheduled run reports (`POST /jobs/...`, `GET /jobs`, `profiles job`): per partition,
and for the weekly run the drift between the live state and the one rebuilt from the log."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from features.drift import UserDrift

MAX_DRIFT_EXAMPLES = 20


@dataclass
class DriftExample:
    user_id: int
    features: list[str]             # feature ids whose arrays differed


@dataclass
class DriftReport:
    """The weekly run's comparison of one partition's live states with the log's."""
    users: int = 0                  # users whose live state differed
    state: int = 0                  # ... in what can still reach a profile
    corrected: int = 0              # live states rewritten from the rebuilt ones
    moved_on: int = 0               # users still past the log read at the end (not compared)
    compared: int = 0
    features: dict[str, int] = field(default_factory=dict)     # feature id -> users differing
    examples: list[DriftExample] = field(default_factory=list)
    log_first_offset: int | None = None     # the first offset the log still had
    log_upto: int = -1                      # read up to this offset

    def differs(self, drift: UserDrift) -> None:
        """Count one user whose live state differs from the rebuilt one."""
        self.users += 1
        self.state += drift.state_differs
        for f in drift.features:
            self.features[f] = self.features.get(f, 0) + 1
        if len(self.examples) < MAX_DRIFT_EXAMPLES:
            self.examples.append(DriftExample(drift.user_id, list(drift.features)))

    @staticmethod
    def total(reports: list[DriftReport]) -> dict[str, Any]:
        """The counts summed over partitions (the log offsets are per partition)."""
        keys = ("users", "state", "corrected", "moved_on", "compared")
        features: dict[str, int] = {}
        examples: list[dict[str, Any]] = []
        for r in reports:
            for f, n in r.features.items():
                features[f] = features.get(f, 0) + n
            examples = (examples + [asdict(e) for e in r.examples])[:MAX_DRIFT_EXAMPLES]
        return {**{k: sum(getattr(r, k) for r in reports) for k in keys},
                "features": features, "examples": examples}


@dataclass
class PartitionRun:
    partition: int
    stream_time: int = -1
    visited: int = 0              # users looked at
    evaluated: int = 0            # users re-evaluated
    published: int = 0            # changed profiles published
    closed_days: int = 0          # days closed by stream time: profile-aggregates published
    retired: int = 0              # idle users whose data was dropped
    index_repaired: int = 0
    stale_index: int = 0
    full: bool = False            # daily: every user re-evaluated (asked, or config changed)
    aborted: str | None = None    # why the partition stopped early (e.g. revoked)
    drift: DriftReport | None = None     # weekly only


COUNTED = ("visited", "evaluated", "published", "closed_days", "retired", "index_repaired",
           "stale_index")


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

    def totals(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: sum(getattr(p, k) for p in self.partitions)
                               for k in COUNTED}
        drifts = [p.drift for p in self.partitions if p.drift]
        if drifts:
            out["drift"] = DriftReport.total(drifts)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["totals"] = self.totals()
        return d
