"""The life of a micro-batch (streams.pipeline.lifecycle) and the compute step
(streams.pipeline.batch_update), with no broker: the group, the producers and the pause watch
are fakes behind the lifecycle's protocols, the features and the state table's reads are real.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
import pytest

from features.config import parse_config
from features.partitioners import PartitionCheck
from features.runtime import FeatureRuntime
from streams.counters import WorkerCounts
from streams.pipeline.batch_update import BatchUpdate
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.fencing import Fence
from streams.pipeline.lifecycle import BatchLifecycle
from streams.pipeline.outbox import Outbox, Publication, Record
from streams.pipeline.publishing import Publishing
from streams.publisher import AiokafkaPublisher
from streams.state_cache import StateCache
from streams.state_table import PARTITION_KEY, PartitionClock, due_key, user_key
from streams.strategy import PublishEveryChange

DAY = 86400
D0 = 20000 * DAY


class Log(list):
    """What happened, in order, across the fakes."""


class FakeGroup:
    def __init__(self, log: Log):
        self.log = log
        self.rebalancing = False
        self.rebalance_count = 0
        self.generation: int | None = 1
        self.in_flight: set[int] = set()
        self.acked: list[int] = []

    def track(self, messages):
        self.in_flight.update(messages)
        self.log.append(("track", list(messages)))

    def untrack(self, messages):
        self.in_flight.difference_update(messages)
        self.log.append(("untrack", list(messages)))

    def ack(self, messages):
        self.in_flight.difference_update(messages)
        self.acked.extend(messages)
        self.log.append(("ack", list(messages)))


class FakeWork:
    """Each message (an int) becomes one record; `during` runs inside compute."""

    def __init__(self, log: Log):
        self.log = log
        self.during = None
        self.fail: Exception | None = None
        self.discarded = 0

    def compute(self, messages, outbox: Outbox) -> None:
        self.log.append(("compute", list(messages)))
        if self.during is not None:
            self.during()
        if self.fail is not None:
            raise self.fail
        for m in messages:
            outbox.records.append(Record("out", None, str(m).encode()))
            outbox.publications.append(Publication(m, "event", None))

    def discard(self) -> None:
        self.discarded += 1
        self.log.append(("discard",))


class FakeOutputs:
    def __init__(self, log: Log):
        self.log = log
        self.emitted: list[Outbox] = []
        self.gates: list[asyncio.Event] = []    # deliver() n waits for gates[n] if given
        self.fail_delivery: Exception | None = None
        self._deliveries = 0

    async def emit(self, outbox: Outbox) -> None:
        self.emitted.append(outbox)
        self.log.append(("emit", [int(r.value) for r in outbox.records]))

    async def deliver(self) -> None:
        n = self._deliveries
        self._deliveries += 1
        if n < len(self.gates):
            await self.gates[n].wait()
        if self.fail_delivery is not None:
            raise self.fail_delivery
        self.log.append(("deliver", n))


class FakeFence:
    def __init__(self, log: Log):
        self.log = log
        self.fence = False
        self.delivered_in: list[int | None] = []

    def fenced(self, started, n_events, generation) -> bool:
        return self.fence

    def delivered(self, generation) -> None:
        self.delivered_in.append(generation)


def lifecycle():
    log = Log()
    group, work, outputs, fence = FakeGroup(log), FakeWork(log), FakeOutputs(log), FakeFence(log)
    told: list[list[Publication]] = []

    def on_delivered(pubs):
        told.append(pubs)
        log.append(("told", [p.profile for p in pubs]))
    lc = BatchLifecycle(group, work, outputs, fence, asyncio.Lock(), WorkerCounts(), on_delivered)
    return lc, log, group, work, outputs, fence, told


def test_a_batch_is_computed_emitted_delivered_told_then_acked_in_that_order():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        group.track([1, 2])
        await (await lc.process([1, 2], taken_in=0))
        assert log == [("track", [1, 2]), ("compute", [1, 2]), ("emit", [1, 2]),
                       ("deliver", 0), ("told", [1, 2]), ("ack", [1, 2])]
        assert group.in_flight == set() and fence.delivered_in == [1]
    asyncio.run(run())


def test_a_batch_taken_before_a_rebalance_began_emits_nothing_and_is_not_acked():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        group.track([1, 2])
        group.rebalancing = True            # a rebalance began after the batch was taken
        await (await lc.process([1, 2], taken_in=0))
        assert ("compute", [1, 2]) not in log and outputs.emitted == []
        assert group.acked == [] and group.in_flight == set()     # untracked: not waited for
        assert lc.counts.rebalance_dropped_batches == 1 and work.discarded == 1
        assert told == []
    asyncio.run(run())


def test_a_rebalance_during_the_compute_drops_the_batch_and_its_cached_states():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        group.track([1, 2])

        def rebalance():
            group.rebalance_count += 1          # begun and over while the batch computed
        work.during = rebalance
        await (await lc.process([1, 2], taken_in=0))
        assert ("compute", [1, 2]) in log and outputs.emitted == []
        assert group.acked == [] and group.in_flight == set()
        assert work.discarded == 1 and lc.counts.rebalance_dropped_batches == 1
    asyncio.run(run())


def test_without_a_rebalance_count_the_batch_is_not_checked():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        group.rebalancing = True
        await (await lc.process([7]))           # taken_in None: the caller does not check
        assert group.acked == [7]
    asyncio.run(run())


def test_a_fenced_batch_emits_nothing_yet_is_acked():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        fence.fence = True
        await (await lc.process([1, 2], taken_in=0))
        assert outputs.emitted == [] and ("deliver", 0) not in log
        assert group.acked == [1, 2]        # its late commit is refused for the old generation
        assert work.discarded == 1 and told == [] and fence.delivered_in == []
    asyncio.run(run())


def test_acks_stay_in_order_when_a_later_batch_delivers_first():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        gate = asyncio.Event()
        outputs.gates = [gate]              # the first delivery waits
        first = await lc.process([1], taken_in=0)
        second = await lc.process([2], after=first, taken_in=0)
        await asyncio.sleep(0.01)
        assert group.acked == []            # the second waits for the first
        gate.set()
        await second
        assert group.acked == [1, 2]
        assert [e for e in log if e[0] in ("told", "ack")] == [
            ("told", [1]), ("ack", [1]), ("told", [2]), ("ack", [2])]
    asyncio.run(run())


def test_a_failed_delivery_leaves_that_batch_and_the_next_unacked_and_not_in_flight():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        outputs.fail_delivery = RuntimeError("broker gone")
        group.track([1])
        first = await lc.process([1], taken_in=0)
        group.track([2])
        second = await lc.process([2], after=first, taken_in=0)
        with pytest.raises(RuntimeError):
            await first
        with pytest.raises(RuntimeError):
            await second
        assert group.acked == [] and group.in_flight == set() and told == []
    asyncio.run(run())


class Batches:
    def __init__(self, batches):
        self.batches = list(batches)

    async def take(self, max_n: int, within: float):
        if not self.batches:
            await asyncio.Event().wait()        # nothing more: wait for ever
        return self.batches.pop(0)[:max_n]


def test_the_agent_loop_delivers_every_batch_and_a_compute_error_untracks_its_batch():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        loop = asyncio.create_task(lc.run(Batches([[1, 2], [3], [4, 5]]), batch_size=10))
        for _ in range(100):
            await asyncio.sleep(0.001)
            if group.acked == [1, 2, 3, 4, 5]:
                break
        loop.cancel()
        assert group.acked == [1, 2, 3, 4, 5]

        lc, log, group, work, outputs, fence, told = lifecycle()
        work.fail = ValueError("a bug")
        with pytest.raises(ValueError):
            await lc.run(Batches([[1, 2]]), batch_size=10)
        assert group.in_flight == set() and group.acked == [] and work.discarded == 1
    asyncio.run(run())


# ---------------------------------------------------------------- fencing


@dataclass
class Pauses:
    longest: float = 0.0

    def longest_pause_since(self, since: float) -> float:
        return self.longest


def test_after_a_pause_past_the_session_timeout_batches_are_fenced_until_a_new_generation():
    pauses, counts = Pauses(), WorkerCounts()
    fence = Fence(pauses, session_timeout=10.0, counts=counts)
    assert not fence.fenced(0.0, 5, generation=3)
    pauses.longest = 12.5                   # over 10 s + 2 s
    assert fence.fenced(0.0, 5, generation=3)
    pauses.longest = 0.0
    assert fence.fenced(0.0, 7, generation=3)           # still the evicted generation
    assert not fence.fenced(0.0, 1, generation=4)       # rejoined
    assert (counts.fenced_batches, counts.fenced_events) == (2, 12)
    off = Fence(Pauses(60.0), 10.0, WorkerCounts(), enabled=False)
    assert not off.fenced(0.0, 1, generation=1)


# ---------------------------------------------------------------- the compute step


class Msg:
    def __init__(self, partition, offset, value, key):
        self.topic, self.partition, self.offset = "user-events", partition, offset
        self.value, self.key, self.timestamp = value, key, 1.0


class DB(dict):
    def put(self, key, value):
        self[key] = value

    def delete(self, key):
        self.pop(key, None)


class Table:
    """The state table's reads: one dict per partition."""

    def __init__(self):
        self.dbs: dict[int, DB] = {}

    def db(self, partition):
        return self.dbs.setdefault(partition, DB())

    def get(self, partition, key):
        return self.db(partition).get(key)


def test_the_compute_step_stages_every_output_and_writes_nothing(tmp_path):
    cfg = parse_config({"mapping_index": str(tmp_path / "idx.json")}, base_dir=tmp_path, env={})
    rt = FeatureRuntime.from_config(cfg)
    table, counts = Table(), WorkerCounts()
    clocks = PartitionClocks(table)
    publishing = Publishing(cfg.kafka.topics, AiokafkaPublisher("unused:9092"), counts, rt.engine.tz)
    update = BatchUpdate(rt, table, StateCache(10), clocks, publishing, PublishEveryChange(),
                         PartitionCheck("murmur2", cfg.kafka.partitions), counts)

    def event(user, ts):
        return orjson.dumps({"user_id": user, "item_id": 5, "action_type": 1, "timestamp": ts})
    p7 = PartitionCheck("murmur2", cfg.kafka.partitions).expected(b"7")
    messages = [Msg(p7, 10, event(7, D0 + 100), b"7"),
                Msg(p7, 11, b"{not json", b"7"),
                Msg(p7, 12, event(7, D0 + DAY + 5), b"7")]     # closes day D0 for user 7
    outbox = Outbox()
    update.compute(messages, outbox)

    assert table.dbs.get(p7, {}) == {}                  # read, never written
    topics = [r.topic for r in outbox.records]
    assert topics.count(cfg.kafka.topics.dlq) == 1
    assert topics.count(cfg.kafka.topics.profile_updates) == 1
    assert topics.count(cfg.kafka.topics.profile_aggregates) == 1
    profile = orjson.loads(next(r.value for r in outbox.records
                                if r.topic == cfg.kafka.topics.profile_updates))
    assert profile["user_id"] == 7 and profile["version"] == 1
    assert [(w.partition, w.key) for w in outbox.state_writes] == [(p7, user_key(7))]
    assert outbox.clocks == {p7: PartitionClock(D0 + DAY + 5, 12)}
    assert [w.key[:4] for w in outbox.local_writes] == [due_key(0, 0)[:4]]  # the due index
    assert (counts.events_in, counts.applied, counts.dead_letters["malformed_json"]) == (3, 2, 1)
    assert counts.published["event"] == 1 and counts.aggregates == 1
    assert PARTITION_KEY not in table.db(p7)
