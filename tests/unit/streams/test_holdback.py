"""Hold-back of publishes (real_time_update.update_interval): the pure decision and due index
(features.holdback), and the flush holding and sending profiles on the write-back path without a
broker (streams.pipeline.batch_update)."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from features import columnar
from features.config import parse_config
from features.holdback import HeldUsers, HoldBack
from features.partitioners import PartitionCheck
from features.runtime import FeatureRuntime
from streams.io.publisher import AiokafkaPublisher
from streams.io.raw_batch import RawBatch
from streams.monitoring.counters import WorkerCounts
from streams.pipeline import batch_update, holdback
from streams.pipeline.batch_update import BatchUpdate
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.holdback import HeldPublishes
from streams.pipeline.outbox import Outbox
from streams.pipeline.publishing import Publishing
from streams.state.cache import StateCache
from streams.state.table_keys import user_key
from streams.strategy import PublishEveryChange
from tests.unit.streams.test_lifecycle import (
    D0,
    DAY,
    FakeFence,
    FakeGroup,
    FakeOutputs,
    Log,
    Msg,
    Table,
    event,
)


def test_first_change_goes_at_once_later_ones_wait_the_interval():
    h = HoldBack(2.0)
    assert h.enabled and h.interval_ms == 2000
    assert h.publish_now(0, 5_000)                  # never published: at once
    assert not h.publish_now(5_000, 5_001)          # within S of the last publish: held
    assert not h.publish_now(5_000, 6_999)
    assert h.due_ms(5_000) == 7_000
    assert h.publish_now(5_000, 7_000)              # S has passed
    assert h.publish_now(50_000, 5_000)             # a publish time far ahead of the clock
    off = HoldBack(0)
    assert not off.enabled and off.publish_now(5_000, 5_001)


def test_held_users_go_out_due_first_by_priority_and_none_is_lost():
    held = HeldUsers()
    held.hold(0, 1, due_ms=100, now_ms=10, events=["a"])
    held.hold(0, 2, due_ms=100, now_ms=20, events=["a", "b", "c"])
    held.hold(1, 3, due_ms=120, now_ms=30, events=["a", "b", "c", "d"])
    held.hold(1, 4, due_ms=500, now_ms=40)
    held.hold(0, 1, due_ms=100, now_ms=60, events=["d"])     # held again: keeps its due time
    assert len(held) == 4 and held.oldest_since() == 10 and held.next_due_ms() == 100
    assert held.take_due(99, 10, lambda h: 0) == []
    by_events = lambda h: float(len(h.events))              # noqa: E731
    first = held.take_due(150, 2, by_events)
    assert [(h.partition, h.user_id) for h in first] == [(1, 3), (0, 2)]
    assert len(held) == 2 and (0, 1) in held                # past the limit: still held
    rest = held.take_due(150, 10, by_events)
    assert [h.user_id for h in rest] == [1] and rest[0].events == ["a", "d"]
    held.release(1, 4)
    assert held.take_due(10 ** 6, 10, by_events) == [] and len(held) == 0
    held.hold(2, 9, 1, 1)
    held.indexed.add(2)
    held.forget()
    assert len(held) == 0 and not held.indexed and held.next_due_ms() is None


# ---------------------------------------------------------------- the flush, with a clock


class Clock:
    def __init__(self, t: float):
        self.t = t

    def time(self) -> float:
        return self.t


def hold_step(tmp_path, interval: float, strategy=None):
    cfg = parse_config({"mapping_index": str(tmp_path / "idx.json")}, base_dir=tmp_path, env={})
    rt = FeatureRuntime.from_config(cfg)
    counts = WorkerCounts()
    publishing = Publishing(cfg.kafka.topics, AiokafkaPublisher("unused:9092"), counts,
                            rt.engine.tz)
    table = Table()
    update = BatchUpdate(rt, table, StateCache(10), PartitionClocks(table), publishing,
                         strategy or PublishEveryChange(),
                         PartitionCheck("murmur2", cfg.kafka.partitions),
                         counts, HoldBack(interval), HeldUsers())
    return cfg, table, update, counts


def burst(p: int, user: int, first_offset: int, ts0: int, n: int, action: int) -> RawBatch:
    """n events of one action a minute apart (20 of action 2 after one of action 1 change the
    behaviour preferences)."""
    return RawBatch.of_records([Msg(p, first_offset + j, event(user, ts0 + 60 * j,
                                                               action_type=action,
                                                               item_id=first_offset + j),
                                    str(user).encode()) for j in range(n)])


def commit(update: BatchUpdate, table: Table) -> list[dict]:
    """Flush and write the states as the outputs would; the profile records."""
    outbox = Outbox()
    update.flush(outbox)
    for w in outbox.state_writes:
        table.store(w.partition)[w.key] = w.value
    return [orjson.loads(r.value) for r in outbox.records if r.topic == "profile-updates"]


@pytest.fixture
def clock(monkeypatch):
    c = Clock(float(int(time.time())))     # events in the future are refused: a real time
    monkeypatch.setattr(batch_update, "time", c)
    monkeypatch.setattr(holdback, "time", c)
    return c


def test_the_flush_holds_a_change_within_the_interval_and_sends_the_latest_after(
        tmp_path, clock):
    cfg, table, update, counts = hold_step(tmp_path, 2.0)
    p = PartitionCheck("murmur2", cfg.kafka.partitions).expected(b"7")
    batches = [burst(p, 7, 1, D0 + 100, 1, 1), burst(p, 7, 2, D0 + 3600, 20, 2),
               burst(p, 7, 22, D0 + DAY + 7, 3, 1)]
    update.compute(batches[0], Outbox())
    first = commit(update, table)
    assert [r["version"] for r in first] == [1]             # after a quiet spell: at once
    clock.t += 0.5
    update.compute(batches[1], Outbox())
    assert commit(update, table) == []                      # within 2 s: held
    clock.t += 0.5
    update.compute(batches[2], Outbox())
    assert commit(update, table) == []                      # still held, one entry
    t0 = int(clock.t - 1) * 1000
    state = columnar.decode(table.store(p)[user_key(7)], 0)
    assert state.held and state.version == 1 and state.published_at == t0
    assert counts.held == 2 and len(update.held) == 1
    assert update.held.take_due(t0 + 1_999, 10, lambda h: 0) == []
    clock.t = t0 / 1000 + 2
    due = update.held.take_due(t0 + 2_000, 10, lambda h: 0)
    assert [h.user_id for h in due] == [7] and len(due[0].events) == 23
    update.stage_held(due)
    sent = commit(update, table)
    # one record of the latest profile, as of the latest applied event
    assert [(r["version"], r["trigger"], r["as_of"]) for r in sent] == \
        [(2, "event", D0 + DAY + 7 + 120)]
    state = columnar.decode(table.store(p)[user_key(7)], 0)
    assert not state.held and state.version == 2 and state.published_at == t0 + 2_000
    # the records' updated_at is the publish time the interval counts from
    assert (first[0]["updated_at"], sent[0]["updated_at"]) == (t0 / 1000, (t0 + 2_000) / 1000)
    assert counts.held_flushed == 1 and len(update.held) == 0
    # the same events published at every change end at the same profile
    _, table0, update0, _ = hold_step(tmp_path, 0)
    every = []
    for b in batches:
        update0.compute(b, Outbox())
        every += commit(update0, table0)
    assert every[-1]["version"] == 2 and every[-1]["as_of"] < sent[0]["as_of"]
    assert every[-1]["features"] == sent[0]["features"]


def published_then_held(tmp_path, clock):
    """User 7 published (version 1), then held a second later; (partition, table, update)."""
    cfg, table, update, _ = hold_step(tmp_path, 2.0)
    p = PartitionCheck("murmur2", cfg.kafka.partitions).expected(b"7")
    update.compute(burst(p, 7, 1, D0 + 100, 1, 1), Outbox())
    assert [r["version"] for r in commit(update, table)] == [1]
    clock.t += 1
    update.compute(burst(p, 7, 2, D0 + 3600, 20, 2), Outbox())
    assert commit(update, table) == [] and len(update.held) == 1
    return p, table, update


def test_a_held_user_whose_interval_passed_goes_out_with_its_next_change(tmp_path, clock):
    p, table, update = published_then_held(tmp_path, clock)
    clock.t += 1.5                      # due, but an event comes before the timer drains it
    update.compute(burst(p, 7, 22, D0 + 7200, 1, 1), Outbox())
    assert [r["version"] for r in commit(update, table)] == [2]
    assert len(update.held) == 0 and not columnar.decode(table.store(p)[user_key(7)], 0).held
    update.stage_held([])               # nothing left to send
    assert commit(update, table) == []


def test_a_held_user_back_at_the_published_profile_is_released_without_a_record(tmp_path,
                                                                                clock):
    p, table, update = published_then_held(tmp_path, clock)
    # the state's data as published (a held mark and nothing else to send)
    state = columnar.decode(table.store(p)[user_key(7)], 0)
    blob = bytearray(columnar.encode(state))
    first = columnar.decode(blob, 0)
    up = columnar.ColumnarUpdate(7, first, held=True)
    columnar.finish(update.rt.engine, [up], (1, 7, 30), with_metrics=False)
    first.published_digest = up.profile.digest()        # as if that profile went out
    table.store(p)[user_key(7)] = columnar.encode(first)
    update.cache.clear()
    clock.t += 2
    update.stage_held(update.held.take_due(int(clock.t * 1000), 10, lambda h: 0))
    assert commit(update, table) == []
    assert not columnar.decode(table.store(p)[user_key(7)], 0).held


class Strategy:
    """Priority: the user id (so the order is known)."""

    def should_update(self, user_id, new_events):
        return True

    def calculate_priority(self, user_id, events):
        return float(user_id)


class ReadyGroup(FakeGroup):
    def ready(self):
        return True

    def owned(self):
        return [0]

    def available(self, partition):
        return True


def test_the_timer_sends_due_users_highest_priority_first_in_a_commit_of_their_own(
        tmp_path, clock):
    from streams.pipeline.lifecycle import BatchLifecycle
    cfg, table, update, counts = hold_step(tmp_path, 2.0, Strategy())
    update.held_batch = 2
    log = Log()
    group = ReadyGroup(log)
    outputs = FakeRecords(log, table)
    lifecycle = BatchLifecycle(group, update, outputs, FakeFence(log), counts)
    sender = HeldPublishes(HoldBack(2.0), update.held, lifecycle, group, None)
    users = (3, 1, 2)
    for j, u in enumerate(users):
        update.compute(burst(0, u, 100 * j + 1, D0 + 100, 1, 1), Outbox())
    commit(update, table)
    clock.t += 0.5
    for j, u in enumerate(users):
        update.compute(burst(0, u, 100 * j + 2, D0 + 3600, 20, 2), Outbox())
    commit(update, table)
    assert len(update.held) == 3

    async def run():
        clock.t += 1                    # not due yet
        assert await sender.drain() is None
        clock.t += 1
        task = await sender.drain()     # two of three (held_batch), highest priority first
        await task
        assert [r["user_id"] for r in outputs.sent] == [3, 2]
        # the agent has a checkpoint open: its commit takes the due user with its own
        await lifecycle.process(burst(0, 9, 500, D0 + 100, 1, 1))
        assert await sender.drain() is None
        await (await lifecycle.commit())
        assert [r["user_id"] for r in outputs.sent] == [3, 2, 9, 1]
        assert await sender.drain() is None
    asyncio.run(run())
    assert all(r["version"] == 2 and r["trigger"] == "event" for r in outputs.sent
               if r["user_id"] != 9)
    assert counts.held_flushed == 3 and counts.commits == 2


class FakeRecords(FakeOutputs):
    """Outputs that write the states to the table and keep the profile records."""

    def __init__(self, log, table):
        super().__init__(log)
        self.table = table
        self.sent: list[dict] = []

    async def emit(self, outbox: Outbox) -> None:
        self.emitted.append(outbox)
        self.sent += [orjson.loads(r.value) for r in outbox.records
                      if r.topic == "profile-updates"]
        for w in outbox.state_writes:
            self.table.store(w.partition)[w.key] = w.value
