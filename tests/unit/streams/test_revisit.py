"""The hourly and daily runs (streams.jobs.revisit) on real RocksDB partitions, with the
pipeline's outputs recorded instead of produced: what the runs publish equals the reference
(features.profile, features.update); and a crash between the records and the states that say
they were published re-sends the same records once, then nothing."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from features import columnar
from features.config import parse_config
from features.encoding import encode
from features.events import day_of
from features.runtime import FeatureRuntime
from features.schedule import next_change_day
from features.update import closed_day_metrics
from offline.batch_io import BatchReport
from reference.batch import build_states
from streams.jobs.report import PartitionRun
from streams.jobs.revisit import Revisits
from streams.state.owned_chunks import OwnedChunks
from streams.state.rocksdb import open_store
from streams.state.table_keys import FEATURES_KEY, due_key, is_user_key, pack_int, user_key
from tools.data.sample import END_TS, SampleSpec, write_sample

DAY = 86400


class Crash(Exception):
    pass


class Group:
    def owned(self) -> list[int]:
        return [0]

    def available(self, partition: int) -> bool:
        return partition == 0


class Recorder:
    """What streams.jobs.revisit uses of ProfilePipeline, on one partition's real RocksDB:
    records kept in order, delivered on flush_publishes; table writes (RocksDB and changelog)
    applied when flush_writes delivers them, lost when it is told to crash."""

    def __init__(self, rt: FeatureRuntime, rocks: Any):
        self.rt, self.cfg, self.tz = rt, rt.cfg, rt.engine.tz
        self.rocks = rocks
        self.states = self          # the state table: RocksDB now, its changelog on flush
        self.pending: list[tuple[bytes, bytes]] = []
        self.lock = asyncio.Lock()
        self.sent: list[tuple] = []
        self.delivered: list[tuple] = []
        self.crash_writes = False

    # the state table (streams.faust_compat.tables.PartitionedTable) of partition 0
    def store(self, partition: int) -> Any:
        return self.rocks

    def open_store(self, partition: int) -> Any:
        return self.rocks

    def set(self, partition: int, key: bytes, value: bytes) -> None:
        self.pending.append((key, value))

    # the outputs
    async def publish(self, profile: Any, version: int, trigger: str) -> None:
        self.sent.append(("profile", profile.user_id, version, trigger, profile.as_of,
                          profile.features, profile.interest_tags,
                          profile.behavior_preferences, profile.activity_level,
                          profile.user_type, profile.confidence))

    async def publish_aggregates(self, user_id: int, day: int, metrics: dict) -> None:
        self.sent.append(("aggregates", user_id, day, metrics))

    async def flush_publishes(self) -> None:
        self.delivered += self.sent
        self.sent = []

    async def flush_writes(self) -> None:
        await self.flush_publishes()
        pending, self.pending = self.pending, []
        if self.crash_writes:
            raise Crash("the worker died before its state writes were delivered")
        for key, value in pending:
            self.rocks.put(key, value)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("revisit")
    write_sample(SampleSpec(users=60, days=20, items=400, seed=9), d)
    cfg = parse_config({"mapping_index": str(d / "idx.json")}, env={})
    rt = FeatureRuntime.from_config(cfg, d / "item_feat_dict.json")
    with open(d / "events.jsonl", "rb") as f:
        states = {u: s for u, s in build_states(rt, f, BatchReport()).items() if not s.empty}
    for uid, s in states.items():          # as the stream leaves a user: published as of T
        p = rt.engine.evaluate(uid, s)
        s.version, s.published_digest, s.published_as_of = 1, p.digest(), s.T
        s.due_day = next_change_day(s, day_of(s.T, 0), rt.engine.windows)
    return rt, states


def store(path: Path, rt: FeatureRuntime, states: dict) -> Any:
    db = open_store(path)
    for uid, s in states.items():
        db.put(str(uid).encode(), encode(s, 0))
        db.put(due_key(s.due_day, uid), b"")
    db.put(FEATURES_KEY, pack_int(0))      # another feature config: the daily run is full
    return db


def run(pl: Recorder, job: str, stream_time: int) -> tuple[PartitionRun, list[tuple]]:
    """One run on a worker just started (its due index not yet checked); its report and the
    records it delivered."""
    revisits = Revisits(pl, OwnedChunks(Group(), pl, pl.lock))
    r = PartitionRun(0, stream_time)
    pl.delivered = []
    asyncio.run(getattr(revisits, job)(0, r, False))
    return r, pl.delivered


def records(db: Any) -> dict[bytes, bytes]:
    return dict(db.items())


def test_the_runs_publish_the_references_records_and_keep_format_4(world, tmp_path):
    rt, states = world
    runs = [("hourly", END_TS + 2 * DAY), ("daily", END_TS + 2 * DAY),
            ("hourly", END_TS + 9 * DAY + 5), ("daily", END_TS + 40 * DAY)]
    pl = Recorder(rt, store(tmp_path / "db", rt, states))
    done = [run(pl, job, clock) for job, clock in runs]
    counts3 = [(r.visited, r.evaluated, r.published, r.closed_days, r.retired, r.stale_index)
               for r, _ in done]
    sent3 = [sent for _, sent in done]
    db = records(pl.rocks)
    pl.rocks.close()
    assert {key for key in db if is_user_key(key)} == {user_key(uid) for uid in states}
    assert all(db[key][0] == columnar.FORMAT for key in db if is_user_key(key))

    # What they published is the reference's. The first hourly run: every user's last day
    # closed (the stream's closing metrics) and the profiles changed as of its clock;
    # then nothing left to close; 40 days on, every user retired.
    first = sent3[0]
    closed = [r for r in first if r[0] == "aggregates"]
    assert sorted(r[1] for r in closed) == sorted(states)
    for _, uid, day, metrics in closed:
        assert day == day_of(states[uid].T, 0)
        assert metrics == closed_day_metrics(rt, states[uid], day)
    T = runs[0][1]
    changed = {uid for uid, s in states.items()
               if rt.engine.evaluate(uid, s, T).digest() != s.published_digest}
    published = [r for r in first if r[0] == "profile"]
    assert changed and {r[1] for r in published} == changed
    for _, uid, version, trigger, as_of, features, *_ in published:
        assert (version, trigger, as_of) == (2, "hourly", T)
        assert features == rt.engine.evaluate(uid, states[uid], T).features
    assert [c[3] for c in counts3] == [len(states), 0, 0, 0]
    assert counts3[3][4] == len(states)


def test_a_crash_between_records_and_states_resends_the_same_records_once(world, tmp_path):
    rt, states = world
    T = END_TS + 2 * DAY
    pl = Recorder(rt, store(tmp_path / "db", rt, states))
    pl.crash_writes = True
    with pytest.raises(Crash):
        run(pl, "hourly", T)
    first = pl.delivered
    assert len([r for r in first if r[0] == "aggregates"]) == len(states)
    # restarted: the due index is checked against the headers again, the same records go out
    pl.crash_writes = False
    r, again = run(pl, "hourly", T)
    assert r.closed_days == len(states) and again == first
    r, last = run(pl, "hourly", T)
    assert last == [] and r.closed_days == 0 and r.published == 0
    pl.rocks.close()
