"""Users' states built from a log, as the stream would hold them after the same events: the
stream's own per-user apply (features.columnar.apply_events, every §6 rule), one evaluation
per user, published once (version 1), the closed days' aggregates, the due day, and the
hand-over's source offset in the header. No Kafka here: bootstrap/cluster.py writes what this
builds.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import orjson

from bootstrap.handover import HandOver
from bootstrap.spill import AGGREGATE, PROFILE, STATE, SpillWriter, read_spill
from features import columnar
from features.columnar.layout import ColumnarState
from features.columnar.logs import segments
from features.partitioners import PARTITIONERS
from features.runtime import FeatureRuntime
from features.update import aggregates_value, mark_published
from offline.scan import Rows
from offline.steps import to_log, user_slices
from streams.state.table_keys import user_key

EVENT_TRIGGER = "event"         # FEATURES.md §7: the profile as of the user's last event


@dataclass
class Built:
    """One share of the users, ready to write: their records (STATE to a changelog partition,
    PROFILE and AGGREGATE keyed outputs) in memory or in spill files, too-late dead letters
    (line, sub, reason, message, None: the caller fills in the original), each partition's
    largest event timestamp, and counts (users, applied, duplicates, states, profiles,
    aggregates)."""
    records: list[tuple[int, int, bytes, bytes]] = field(default_factory=list)
    spills: list[str] = field(default_factory=list)
    dead: list[tuple] = field(default_factory=list)
    stream_time: dict[int, int] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)

    def add(self, kind: int, partition: int, key: bytes, value: bytes) -> None:
        self.records.append((kind, partition, key, value))

    def merge(self, other: "Built") -> None:
        self.records += other.records
        self.spills += other.spills
        self.dead += other.dead
        for p, t in other.stream_time.items():
            self.stream_time[p] = max(t, self.stream_time.get(p, -1))
        self.counts.update(other.counts)

    def spill_to(self, path: Path) -> None:
        """Move the records in memory to a spill file."""
        if self.records:
            w = SpillWriter(path)
            for r in self.records:
                w.add(*r)
            w.close()
            self.spills.append(str(path))
            self.records = []

    def iter(self, *kinds: int) -> Iterator[tuple[int, int, bytes, bytes]]:
        """(kind, partition, key, value) of these kinds: those in memory, then the spills'."""
        yield from (r for r in self.records if r[0] in kinds)
        for path in self.spills:
            yield from read_spill(Path(path), kinds)


def kafka_partitions(user_ids: list[int], partitioner: str, partitions: int) -> list[int]:
    """Each user's `user-events` partition: where the producers' partitioner puts its key."""
    fn: Callable[[bytes, int], int] = PARTITIONERS[partitioner]
    return [fn(user_key(u), partitions) for u in user_ids]


def build_users(rt: FeatureRuntime, rows: Rows, handover: HandOver, partitioner: str,
                now_ms: int, spill_dir: str | None = None) -> Built:
    """Every user of `rows` (valid events grouped by user, users ascending, each user's in log
    order) through the stream's apply, evaluated and published once. With `spill_dir` the
    records go to a file there, not into memory."""
    out = Built()
    user = rows.cols["user"]
    spill = None if spill_dir is None else \
        SpillWriter(Path(tempfile.mkstemp(prefix="share-", dir=spill_dir)[1]))
    for sl in user_slices(user):
        _build_slice(rt, rows, sl, handover, partitioner, now_ms, out,
                     out if spill is None else spill)
    if spill is not None:
        spill.close()
        out.spills.append(str(spill.path))
    return out


def _build_slice(rt: FeatureRuntime, rows: Rows, sl: slice, handover: HandOver,
                 partitioner: str, now_ms: int, out: Built, sink: Built | SpillWriter) -> None:
    log = to_log(rows, sl)
    line, sub = rows.cols["line"][sl], rows.cols["sub"][sl]
    starts = segments(log.user)[1]
    ends = np.append(starts[1:], len(log))
    uids = log.user[starts].tolist()
    parts = kafka_partitions(uids, partitioner, handover.partitions)
    updates = []
    counts = out.counts
    for uid, a, b in zip(uids, starts.tolist(), ends.tolist()):
        events = log.events(np.arange(a, b))
        # offsets: the event's place in the user's log (apply_events skips none of them)
        up = columnar.apply_events(rt, uid, ColumnarState.new(), list(enumerate(events)))
        updates.append(up)
        counts["applied"] += up.applied
        counts["duplicates"] += up.duplicates
        for i, ev in up.too_late:
            counts["rejected:too_late"] += 1
            out.dead.append((int(line[a + i]), int(sub[a + i]), "too_late",
                             f"day of timestamp {ev.ts} is before the user's 30-day window "
                             f"(user T {up.state.T})", None))
    for p, t in zip(parts, (log.ts[a:b].max() for a, b in zip(starts.tolist(),
                                                               ends.tolist()))):
        out.stream_time[p] = max(int(t), out.stream_time.get(p, -1))
    engine, tz = rt.engine, rt.engine.tz
    columnar.finish(engine, updates, tuple(rt.cfg.behavior_preferences.time_windows),
                    with_metrics=False)
    states = [up.state for up in updates]
    dues = columnar.next_change_days(states, [(s.T + tz) // 86400 for s in states],
                                     engine.windows, tz)
    dumps = orjson.dumps
    for up, p, due in zip(updates, parts, dues):
        state, key = up.state, user_key(up.user_id)
        if up.profile is not None:
            version = mark_published(state, up.profile)
            state.published_at = now_ms
            sink.add(PROFILE, p, key, dumps(up.profile.to_record(version, EVENT_TRIGGER,
                                                                 now_ms / 1000)))
            counts["profiles"] += 1
        for day, metrics in up.closed_days:
            sink.add(AGGREGATE, p, key, dumps(aggregates_value(up.user_id, day, metrics, tz)))
            counts["aggregates"] += 1
        state.due_day = due
        state.source_offset = handover.source_offset(p)
        sink.add(STATE, p, key, columnar.encode(state))
    counts["states"] += len(uids)
    counts["users"] += len(uids)
