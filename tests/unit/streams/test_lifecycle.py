"""The life of a micro-batch (streams.pipeline.lifecycle) and the compute step
(streams.pipeline.batch_update), with no broker: the group, the producers and the pause watch
are fakes behind the lifecycle's protocols, the features and the state table's reads are real.
"""
from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass, field

import orjson
import pytest

from features import columnar
from features.config import parse_config
from features.partitioners import PartitionCheck
from features.runtime import FeatureRuntime
from streams.io.publisher import AiokafkaPublisher
from streams.io.raw_batch import RawBatch
from streams.monitoring.counters import WorkerCounts
from streams.pipeline import lifecycle as lifecycle_module
from streams.pipeline.batch_update import BatchUpdate
from streams.pipeline.clocks import PartitionClocks
from streams.pipeline.fencing import Fence
from streams.pipeline.lifecycle import BatchLifecycle, CommitPolicy
from streams.pipeline.outbox import Outbox, Publication, Record
from streams.pipeline.publishing import Publishing
from streams.state.cache import StateCache
from streams.state.table_keys import PARTITION_KEY, PartitionClock, due_key, user_key
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

    # a batch is a list of ints here (a RawBatch counts as one item); untrack and ack take a
    # list of batches, logged as one list
    @staticmethod
    def items(batch):
        return list(batch) if isinstance(batch, list) else [batch]

    def track(self, batch):
        self.in_flight.update(self.items(batch))
        self.log.append(("track", self.items(batch)))

    def untrack(self, batches):
        messages = [m for b in batches for m in self.items(b)]
        self.in_flight.difference_update(messages)
        self.log.append(("untrack", messages))

    def ack(self, batches):
        messages = [m for b in batches for m in self.items(b)]
        self.in_flight.difference_update(messages)
        self.acked.extend(messages)
        self.log.append(("ack", messages))


class FakeWork:
    """Each message (an int) is a user made dirty; a flush turns each dirty user into one record.
    `during` runs inside compute."""

    def __init__(self, log: Log):
        self.log = log
        self.during = None
        self.fail: Exception | None = None
        self.discarded = 0
        self.dirty: list[int] = []

    def compute(self, messages, outbox: Outbox) -> None:
        self.log.append(("compute", list(messages)))
        if self.during is not None:
            self.during()
        if self.fail is not None:
            raise self.fail
        self.dirty.extend(m for m in messages if m not in self.dirty)

    def flush(self, outbox: Outbox) -> None:
        self.log.append(("flush", list(self.dirty)))
        for m in self.dirty:
            outbox.records.append(Record("out", None, str(m).encode()))
            outbox.publications.append(Publication(m, "event", None))
        self.dirty = []

    @property
    def dirty_count(self) -> int:
        return len(self.dirty)

    def discard(self) -> None:
        self.discarded += 1
        self.dirty = []
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

    async def deliver(self, outbox: Outbox, still_ours, batches) -> bool:
        n = self._deliveries
        self._deliveries += 1
        if n < len(self.gates):
            await self.gates[n].wait()
        if self.fail_delivery is not None:
            raise self.fail_delivery
        if not still_ours():
            self.log.append(("states only", n))
            return False
        self.log.append(("deliver", n))
        return True


class FakeFence:
    def __init__(self, log: Log):
        self.log = log
        self.fence = False
        self.delivered_in: list[int | None] = []

    def fenced(self, started, n_events, generation, rebalances=None) -> bool:
        return self.fence

    def delivered(self, generation) -> None:
        self.delivered_in.append(generation)


def lifecycle(policy: CommitPolicy = CommitPolicy()):
    log = Log()
    group, work, outputs, fence = FakeGroup(log), FakeWork(log), FakeOutputs(log), FakeFence(log)
    told: list[list[Publication]] = []

    def on_delivered(pubs):
        told.append(pubs)
        log.append(("told", [p.profile for p in pubs]))
    lc = BatchLifecycle(group, work, outputs, fence, WorkerCounts(), on_delivered, policy)
    return lc, log, group, work, outputs, fence, told


async def take_and_process(lc, group, messages):
    group.track(messages)
    await lc.process(messages, taken_in=group.rebalance_count)


def test_a_batch_is_computed_committed_emitted_delivered_told_then_acked_in_that_order():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        await take_and_process(lc, group, [1, 2])
        await (await lc.commit())
        assert log == [("track", [1, 2]), ("compute", [1, 2]), ("flush", [1, 2]),
                       ("emit", [1, 2]), ("deliver", 0), ("told", [1, 2]), ("ack", [1, 2])]
        assert group.in_flight == set() and fence.delivered_in == [1]
    asyncio.run(run())


def test_status_says_what_is_open_and_how_long_a_delivery_has_run():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        idle = {"open_events": 0, "open_seconds": None, "delivering_seconds": None,
                "lock_held": False}
        assert lc.status() == idle, lc.status()
        await take_and_process(lc, group, [1, 2, 3])
        st = lc.status()
        assert st["open_events"] == 3 and st["open_seconds"] >= 0, st
        assert st["delivering_seconds"] is None, st
        outputs.gates = [asyncio.Event()]
        delivery = await lc.commit()
        first = lc.status()
        assert first["open_events"] == 0 and first["delivering_seconds"] is not None, first
        await asyncio.sleep(0.05)
        later = lc.status()
        assert later["delivering_seconds"] > first["delivering_seconds"], (first, later)
        outputs.gates[0].set()
        await delivery
        assert lc.status() == idle, lc.status()
    asyncio.run(run())


def test_batches_of_one_checkpoint_flush_each_user_once_and_are_acked_after_its_delivery():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        await take_and_process(lc, group, [1, 2])
        await take_and_process(lc, group, [2, 3])
        assert outputs.emitted == [] and group.acked == []     # nothing out before the commit
        assert group.in_flight == {1, 2, 3}                      # ... and all of it in flight
        await (await lc.commit())
        assert [e for e in log if e[0] in ("flush", "emit")] == [("flush", [1, 2, 3]),
                                                                  ("emit", [1, 2, 3])]
        assert group.acked == [1, 2, 2, 3] and group.in_flight == set()
        assert await lc.commit() is None                         # nothing open
    asyncio.run(run())


def test_a_batch_taken_before_a_rebalance_began_emits_nothing_and_is_not_acked():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        group.track([1, 2])
        group.rebalancing = True            # a rebalance began after the batch was taken
        await lc.process([1, 2], taken_in=0)
        await lc.commit()
        assert ("compute", [1, 2]) not in log and outputs.emitted == []
        assert group.acked == [] and group.in_flight == set()     # untracked: not waited for
        assert lc.counts.rebalance_dropped_batches == 1 and work.discarded == 0
        assert told == []
    asyncio.run(run())


def test_a_rebalance_that_begins_flushes_the_open_checkpoint_first():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        await take_and_process(lc, group, [1, 2])       # computed before the rebalance
        group.track([3])                                # taken before it, not yet computed
        group.rebalancing, group.rebalance_count = True, 1
        await lc.process([3], taken_in=0)               # dropped, never computed
        await (await lc.commit())                       # the revoke waits for 1 and 2: flushed
        assert ("compute", [3]) not in log
        assert [e for e in log if e[0] == "emit"] == [("emit", [1, 2])]
        assert group.acked == [1, 2] and group.in_flight == set()
        assert lc.counts.rebalance_dropped_batches == 1 and work.discarded == 0
    asyncio.run(run())


def test_a_checkpoint_left_open_past_a_rebalance_or_a_new_generation_is_dropped():
    async def run():
        for change in ("completed", "generation"):
            lc, log, group, work, outputs, fence, told = lifecycle()
            await take_and_process(lc, group, [1, 2])
            if change == "completed":
                group.rebalance_count = 1       # one began and is over without its flush
            else:
                group.generation = 2
            assert await lc.commit() is None
            assert outputs.emitted == [] and group.acked == [] and group.in_flight == set()
            assert work.discarded == 1 and lc.checkpoint is None
    asyncio.run(run())


def test_a_rebalance_during_the_compute_drops_the_whole_checkpoint_and_its_cached_states():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        await take_and_process(lc, group, [1, 2])
        group.track([3])

        def rebalance():
            group.rebalance_count += 1          # begun and over while the batch computed
        work.during = rebalance
        await lc.process([3], taken_in=0)
        assert await lc.commit() is None
        assert ("compute", [3]) in log and outputs.emitted == []
        assert group.acked == [] and group.in_flight == set()     # 1, 2 and 3 come again
        assert work.discarded == 1 and lc.counts.rebalance_dropped_batches == 1
    asyncio.run(run())


def test_without_a_rebalance_count_the_batch_is_not_checked():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        group.rebalancing = True
        await lc.process([7])                   # taken_in None: the caller does not check
        await (await lc.commit())
        assert group.acked == [7]
    asyncio.run(run())


def test_a_fenced_checkpoint_emits_nothing_and_is_not_acked():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        await take_and_process(lc, group, [1])
        await take_and_process(lc, group, [2])
        fence.fence = True
        assert await lc.commit() is None
        assert outputs.emitted == [] and ("deliver", 0) not in log
        assert ("flush", [1, 2]) not in log
        # the worker may still be a member: an ack would let its position commit past them;
        # untracked, so the rejoin the fence asks for does not wait for them
        assert group.acked == [] and group.in_flight == set()
        assert work.discarded == 1 and told == [] and fence.delivered_in == []
    asyncio.run(run())


def test_fenced_while_the_states_are_delivered_no_record_goes_out_and_nothing_is_acked():
    """A SIGSTOP between the fence check and the changelog drain: the states were handed over
    before, the records must not follow them once the process wakes up a zombie."""
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        outputs.gates = [asyncio.Event()]
        await take_and_process(lc, group, [1, 2])
        delivery = await lc.commit()
        assert ("emit", [1, 2]) in log                   # states handed to the producers
        fence.fence = True                               # ... then the process was frozen
        outputs.gates[0].set()
        await delivery
        assert ("states only", 0) in log and ("deliver", 0) not in log
        assert group.acked == [] and group.in_flight == set() and told == []
        assert fence.delivered_in == []
    asyncio.run(run())


def test_a_commit_emits_once_the_one_before_has_delivered_and_acks_stay_in_order():
    """Two commits' states out with neither's records would let a crash lose a version: the
    next owner sends again only the record of the state it finds (a CI run of the hold-back
    test saw a user's versions go 4, 6)."""
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        gate = asyncio.Event()
        outputs.gates = [gate]              # the first delivery waits
        await lc.process([1], taken_in=0)
        await lc.commit()
        await lc.process([2], taken_in=0)
        second = asyncio.create_task(lc.commit())
        await asyncio.sleep(0.01)
        assert not second.done()            # the second commit waits for the first delivery
        assert [e for e in log if e[0] == "emit"] == [("emit", [1])]
        assert group.acked == []
        gate.set()
        await (await second)
        assert group.acked == [1, 2]
        assert [e for e in log if e[0] in ("emit", "deliver", "told", "ack")] == [
            ("emit", [1]), ("deliver", 0), ("told", [1]), ("ack", [1]),
            ("emit", [2]), ("deliver", 1), ("told", [2]), ("ack", [2])]
    asyncio.run(run())


def test_a_failed_delivery_leaves_that_commit_and_the_next_unacked_and_not_in_flight():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        outputs.fail_delivery = RuntimeError("broker gone")
        await take_and_process(lc, group, [1])
        first = await lc.commit()
        await take_and_process(lc, group, [2])
        second = await lc.commit()          # the first delivery failed: nothing emitted
        with pytest.raises(RuntimeError):
            await first
        assert second is None
        assert [e for e in log if e[0] == "emit"] == [("emit", [1])]
        assert group.acked == [] and group.in_flight == set() and told == []
    asyncio.run(run())


def test_a_failed_delivery_is_told_once_and_a_delivered_one_never():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        failures: list[BaseException] = []
        lc.on_delivery_failed = failures.append
        await take_and_process(lc, group, [1])
        await (await lc.commit())
        await asyncio.sleep(0)              # done callbacks run
        assert failures == []
        outputs.fail_delivery = RuntimeError("broker gone")
        await take_and_process(lc, group, [2])
        failed = await lc.commit()
        with pytest.raises(RuntimeError):
            await failed
        await asyncio.sleep(0)
        assert [str(e) for e in failures] == ["broker gone"]
        await take_and_process(lc, group, [3])
        assert await lc.commit() is None    # dropped: nothing more delivered, nothing told
        await asyncio.sleep(0)
        assert len(failures) == 1 and group.acked == [1]
    asyncio.run(run())


def test_others_taking_the_lock_commit_the_open_checkpoint_first():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        await take_and_process(lc, group, [1, 2])
        async with lc.others_lock:
            log.append(("job",))
            assert lc.lock.locked()
        await lc.delivery
        assert [e[0] for e in log if e[0] in ("emit", "job", "ack")] == ["emit", "job", "ack"]
        assert group.acked == [1, 2]
    asyncio.run(run())


class Batches:
    """A feed: batches taken in turn; `len` is what is still waiting."""

    def __init__(self, batches):
        self.batches = list(batches)

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches)

    async def take(self, max_n: int, within: float):
        if not self.batches:
            await asyncio.Event().wait()        # nothing more: wait for ever
        return self.batches.pop(0)[:max_n]


async def run_until(lc, group, source, acked, batch_size=10):
    loop = asyncio.create_task(lc.run(source, batch_size=batch_size))
    for _ in range(200):
        await asyncio.sleep(0.001)
        if group.acked == acked:
            break
    loop.cancel()


def test_the_agent_commits_once_it_has_caught_up_and_a_compute_error_drops_the_checkpoint():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        await run_until(lc, group, Batches([[1, 2], [3], [4, 5]]), [1, 2, 3, 4, 5])
        assert group.acked == [1, 2, 3, 4, 5]
        # the feed had more after the first two batches: one commit for all three
        assert [e for e in log if e[0] == "emit"] == [("emit", [1, 2, 3, 4, 5])]

        lc, log, group, work, outputs, fence, told = lifecycle()
        computes = []

        def third_fails():
            computes.append(1)
            if len(computes) == 3:
                raise ValueError("a bug")
        work.during = third_fails
        with pytest.raises(ValueError):         # [3] committed (caught up); [4] open, [5] fails
            await asyncio.wait_for(lc.run(Batches([[1, 2], [3], [4], [5]]), batch_size=1), 1)
        assert group.in_flight == set() and work.discarded == 1
        assert group.acked == [] and outputs.emitted == []
    asyncio.run(run())


def test_the_agent_stops_on_a_failed_delivery_and_the_commit_after_it_emits_nothing():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle(CommitPolicy(0.0))
        gate = asyncio.Event()
        outputs.gates = [gate]
        outputs.fail_delivery = RuntimeError("broker gone")
        asyncio.get_running_loop().call_later(0.05, gate.set)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(lc.run(Batches([[1], [2], [3]]), batch_size=1), 1)
        assert [e for e in log if e[0] == "emit"] == [("emit", [1])]
        assert group.acked == [] and group.in_flight == set() and told == []
    asyncio.run(run())


def test_caught_up_while_a_commit_delivers_the_agent_computes_on_into_the_next_one(monkeypatch):
    # an open checkpoint commits after COMMIT_POLL without new events: long here, so that only
    # being caught up could commit [2] before [3] comes
    monkeypatch.setattr(lifecycle_module, "COMMIT_POLL", 5.0)

    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()
        gate = asyncio.Event()
        outputs.gates = [gate]              # the first delivery waits
        feed: asyncio.Queue = asyncio.Queue()

        class Trickle:                      # one batch at a time: caught up after each
            def __len__(self) -> int:
                return feed.qsize()

            async def take(self, max_n: int, within: float):
                return await feed.get()
        agent = asyncio.create_task(lc.run(Trickle(), batch_size=10))
        for batch in ([1], [2], [3]):
            feed.put_nowait(batch)
            await asyncio.sleep(0.01)
        assert [e for e in log if e[0] == "emit"] == [("emit", [1])]
        gate.set()
        await asyncio.sleep(0.01)           # the first delivery is done
        feed.put_nowait([4])                # caught up again after it: [2, 3, 4] commit
        for _ in range(200):
            await asyncio.sleep(0.005)
            if group.acked == [1, 2, 3]:
                break
        agent.cancel()
        assert [e for e in log if e[0] == "emit"][:2] == [("emit", [1]), ("emit", [2, 3, 4])]
        assert group.acked[:3] == [1, 2, 3]
    asyncio.run(run())


def test_under_backlog_the_agent_commits_on_the_dirty_cap_and_the_interval():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle(CommitPolicy(60.0, max_dirty=3))
        await run_until(lc, group, Batches([[1, 2], [3], [4, 5], [6]]), [1, 2, 3, 4, 5, 6])
        assert [e for e in log if e[0] == "emit"] == [("emit", [1, 2, 3]), ("emit", [4, 5, 6])]

        lc, log, group, work, outputs, fence, told = lifecycle(CommitPolicy(0.0))
        await run_until(lc, group, Batches([[1, 2], [3], [4]]), [1, 2, 3, 4])
        assert [e for e in log if e[0] == "emit"] == [("emit", [1, 2]), ("emit", [3]),
                                                       ("emit", [4])]
    asyncio.run(run())


def test_an_open_checkpoint_commits_when_the_feed_goes_quiet_or_a_rebalance_clears_it():
    async def run():
        lc, log, group, work, outputs, fence, told = lifecycle()

        class Cleared(Batches):
            async def take(self, max_n, within):
                batch = await super().take(max_n, within)
                self.batches.clear()            # a rebalance clears the feed after this one
                return batch
        await run_until(lc, group, Cleared([[1, 2], [3]]), [1, 2])
        assert group.acked == [1, 2] and lc.checkpoint is None
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


@dataclass
class Membership:
    """The coordinator's last confirmation of this worker (monotonic time) and the rejoins asked."""
    confirmed: float = field(default_factory=time.monotonic)
    rejoins: int = 0
    joins: int = 0

    def confirmed_at(self) -> float:
        return self.confirmed

    def request_rejoin(self) -> None:
        self.rejoins += 1


def test_unconfirmed_for_half_the_session_timeout_a_worker_is_fenced_until_a_rebalance():
    # the broker paused or out of reach: not a process pause, yet the broker may expire this
    # worker and hand its partitions over while it goes on emitting
    member, counts = Membership(), WorkerCounts()
    fence = Fence(Pauses(), session_timeout=10.0, counts=counts, membership=member)
    assert not fence.fenced(0.0, 5, generation=3, rebalances=7)
    member.confirmed = time.monotonic() - 4.0           # heartbeats late, under 5 s
    assert not fence.fenced(0.0, 5, generation=3, rebalances=7)
    member.confirmed = time.monotonic() - 6.0
    assert fence.fenced(0.0, 5, generation=3, rebalances=7)
    assert member.rejoins == 1                           # asked: the broker may not have
    member.confirmed = time.monotonic()                  # expired it
    assert fence.fenced(0.0, 2, generation=3, rebalances=7)     # no rebalance yet
    # the embedded broker can give the same generation number after a rebalance
    assert not fence.fenced(0.0, 1, generation=3, rebalances=8)
    assert (counts.fenced_batches, counts.fenced_events) == (2, 7) and member.rejoins == 1
    # fenced while a rebalance was under way: the assignment that ends it (positions back at
    # the committed offsets) lifts the fence, whatever the counts say
    member.confirmed = time.monotonic() - 6.0
    assert fence.fenced(0.0, 1, generation=3, rebalances=8)
    member.confirmed, member.joins = time.monotonic(), member.joins + 1
    assert not fence.fenced(0.0, 1, generation=3, rebalances=8)


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

    def store(self, partition):
        return self.dbs.setdefault(partition, DB())

    def get(self, partition, key):
        return self.store(partition).get(key)


def update_step(tmp_path, table, counts=None):
    cfg = parse_config({"mapping_index": str(tmp_path / "idx.json")}, base_dir=tmp_path, env={})
    rt = FeatureRuntime.from_config(cfg)
    counts = counts or WorkerCounts()
    publishing = Publishing(cfg.kafka.topics, AiokafkaPublisher("unused:9092"), counts,
                            rt.engine.tz)
    update = BatchUpdate(rt, table, StateCache(10), PartitionClocks(table), publishing,
                         PublishEveryChange(), PartitionCheck("murmur2", cfg.kafka.partitions),
                         counts)
    return cfg, update


def event(user, ts, **extra):
    return orjson.dumps({"user_id": user, "item_id": 5, "action_type": 1, "timestamp": ts,
                         **extra})


def test_the_compute_step_stages_dead_letters_and_the_flush_the_rest_once_per_user(tmp_path):
    table, counts = Table(), WorkerCounts()
    cfg, update = update_step(tmp_path, table, counts)
    topics = cfg.kafka.topics
    p7 = PartitionCheck("murmur2", cfg.kafka.partitions).expected(b"7")
    outbox = Outbox()
    update.compute(RawBatch.of_records([Msg(p7, 10, event(7, D0 + 100), b"7"),
                                        Msg(p7, 11, b"{not json", b"7")]), outbox)
    update.compute(RawBatch.of_records([Msg(p7, 12, event(7, D0 + DAY + 5), b"7"),  # closes D0
                                        Msg(p7, 13, event(8, D0 + 50), b"8")]), outbox)
    assert [r.topic for r in outbox.records] == [topics.dlq]      # nothing else before the flush
    assert outbox.state_writes == [] and outbox.local_writes == [] and update.dirty_count == 2
    assert outbox.clocks == {p7: PartitionClock(D0 + DAY + 5, 13)}
    update.flush(outbox)
    assert table.dbs.get(p7, {}) == {}                  # read, never written
    published = [r.topic for r in outbox.records]
    assert published.count(topics.profile_updates) == 2           # once per user per commit
    assert published.count(topics.profile_aggregates) == 1
    profiles = {p["user_id"]: p for p in (orjson.loads(r.value) for r in outbox.records
                                          if r.topic == topics.profile_updates)}
    assert profiles[7]["version"] == 1 and profiles[7]["as_of"] == D0 + DAY + 5
    writes = sorted((w.partition, w.key) for w in outbox.state_writes)
    assert writes == [(p7, user_key(7)), (p7, user_key(8))]
    assert all(w.value[0] == columnar.FORMAT for w in outbox.state_writes)  # the v3 record
    assert [w.key[:4] for w in outbox.local_writes] == [due_key(0, 0)[:4]] * 2  # the due index
    assert (counts.events_in, counts.applied, counts.dead_letters["malformed_json"]) == (4, 3, 1)
    assert counts.published["event"] == 2 and counts.aggregates == 1
    assert PARTITION_KEY not in table.store(p7) and update.dirty_count == 0


def emit(table: Table, outbox: Outbox, published: list) -> None:
    """What streams.pipeline.outputs does with an outbox, on the fake table."""
    for w in outbox.state_writes:
        table.store(w.partition)[w.key] = w.value
    for lw in outbox.local_writes:
        (table.store(lw.partition).delete(lw.key) if lw.value is None
         else table.store(lw.partition).put(lw.key, lw.value))
    published.extend(outbox.records)


def random_log(rng, n):
    """n events of 6 users over 5 days (some late, some duplicate ids), each user's on its
    partition."""
    check = PartitionCheck("murmur2", 8)
    out, t = [], D0
    for off in range(n):
        t += rng.randint(0, 3 * 3600)
        ts = t - rng.randint(0, 2 * DAY) if rng.random() < 0.1 else t
        user = rng.randint(1, 6)
        extra = {"event_id": f"e{rng.randint(0, 40)}"} if rng.random() < 0.5 else {}
        value = orjson.dumps({"user_id": user, "item_id": rng.randint(1, 30),
                              "action_type": rng.randint(0, 2), "timestamp": ts, **extra})
        key = str(user).encode()
        out.append(Msg(check.expected(key), off, value, key))
    return out


def run_log(update, table, messages, sizes, commit_every, published) -> int:
    """Batches of the given sizes (cycled), committed every `commit_every` batches; returns how
    many messages the commits covered (the rest is computed, not committed)."""
    k, i, outbox, open_batches, committed = 0, 0, Outbox(), 0, 0
    while i < len(messages):
        n = sizes[k % len(sizes)]
        update.compute(RawBatch.of_records(messages[i:i + n]), outbox)
        i, k, open_batches = i + n, k + 1, open_batches + 1
        if open_batches == commit_every:
            update.flush(outbox)
            emit(table, outbox, published)
            outbox, open_batches, committed = Outbox(), 0, min(i, len(messages))
    return committed


def clean_pass(tmp_path, messages) -> list:
    """What one pass over the messages publishes, a commit after every batch of 7."""
    clean_table, clean = Table(), []
    _, update = update_step(tmp_path, clean_table)
    run_log(update, clean_table, messages, [7], 1, clean)
    return clean


def test_after_a_crash_the_replay_publishes_the_same_versions_and_arrays_as_before(tmp_path):
    """Write-back: a crash loses the batches since the last commit (never published); the
    events since the consumer's last commit come again, the applied ones are skipped by offset
    and the rest applied to the last flushed states. No (user, version) is ever published with
    two different profiles, and the latest record of each user equals a clean pass."""
    import random

    def arrays(r):      # as_of and confidence are the state's when it was (re)published
        return {k: v for k, v in orjson.loads(r.value).items()
                if k in ("user_id", "version", "features", "interest_tags",
                         "behavior_preferences", "activity_level", "user_type")}
    for seed in range(12):
        rng = random.Random(seed)
        messages = random_log(rng, 160)
        clean = clean_pass(tmp_path, messages)

        table, published = Table(), []
        cfg, update = update_step(tmp_path, table)
        cut = rng.randint(20, 140)
        committed = run_log(update, table, messages[:cut], [rng.randint(1, 9), 5], 3,
                            published)
        # the crash: the open checkpoint and the cache are gone; the consumer's last commit
        # is at the last flush or before it
        replay_from = rng.randint(0, committed)
        cfg, update = update_step(tmp_path, table)
        run_log(update, table, messages[replay_from:], [rng.randint(1, 12)], 2, published)
        update.flush(outbox := Outbox())
        emit(table, outbox, published)

        topic = cfg.kafka.topics.profile_updates
        seen: dict[tuple[int, int], dict] = {}
        for r in published:
            if r.topic == topic:
                a = arrays(r)
                key = (a.pop("user_id"), a.pop("version"))
                assert seen.setdefault(key, a) == a, f"seed {seed}: {key} published twice"
        latest = {r.key: arrays(r) for r in published if r.topic == topic}
        clean_latest = {r.key: arrays(r) for r in clean if r.topic == topic}
        for rec in (*latest.values(), *clean_latest.values()):
            rec.pop("version")
        assert latest == clean_latest, f"seed {seed}"


def test_a_crash_between_the_states_and_the_records_leaves_no_gap_in_the_versions(tmp_path):
    """States reach the changelog before records go out: a crash between the two loses the
    records of a commit whose states say they were published. Its events come again, followed by
    newer ones: the record of each state's version is sent again first, so every user's versions
    grow by one (FEATURES.md §7), and the latest record equals a clean pass."""
    import random
    gaps_seen = 0
    for seed in range(12):
        rng = random.Random(seed)
        messages = random_log(rng, 160)
        clean = clean_pass(tmp_path, messages)

        table, published, counts = Table(), [], WorkerCounts()
        cfg, update = update_step(tmp_path, table, counts)
        cut = rng.randint(40, 120)
        committed = run_log(update, table, messages[:cut], [5], 1, published)
        # one more commit whose states are delivered and whose records are lost
        lost = Outbox()
        update.compute(RawBatch.of_records(messages[committed:committed + 9]), lost)
        update.flush(lost)
        emit(table, Outbox(state_writes=lost.state_writes, local_writes=lost.local_writes), [])
        # its events were never acked: they come again, and newer ones with them
        cfg, update = update_step(tmp_path, table, counts)
        # (the first batch may hold the redelivered events alone, the newer ones following
        # in the next batch of the same checkpoint)
        run_log(update, table, messages[committed:], [rng.randint(2, 20)], 2, published)
        update.flush(outbox := Outbox())
        emit(table, outbox, published)

        topic = cfg.kafka.topics.profile_updates
        top: dict[bytes, int] = {}
        for r in published:
            if r.topic != topic:
                continue
            v = orjson.loads(r.value)["version"]
            if v > top.get(r.key, 0):
                assert v == top.get(r.key, 0) + 1, f"seed {seed}: {r.key!r} jumped to {v}"
                top[r.key] = v
        gaps_seen += counts.sent_again
        latest = {r.key: orjson.loads(r.value)["features"] for r in published if r.topic == topic}
        assert latest == {r.key: orjson.loads(r.value)["features"] for r in clean
                          if r.topic == topic}, f"seed {seed}"
    assert gaps_seen > 0            # the case arose: records were sent again before newer ones


def test_after_a_crash_each_user_is_sent_again_once_however_many_commits_the_replay_takes(
        tmp_path):
    """The redelivered events of one user can span many commits; its record is sent again at the
    first only (a CI run of the hold-back test counted 777 records sent again for 297 users,
    and failed on the record count), and versions still grow by one."""
    import random
    for seed in range(8):
        rng = random.Random(seed)
        messages = random_log(rng, 160)
        table, published, counts = Table(), [], WorkerCounts()
        cfg, update = update_step(tmp_path, table, counts)
        cut = rng.randint(80, 140)
        committed = run_log(update, table, messages[:cut], [5], 1, published)
        # the crash, then a replay from long before the last commit, a commit after each
        # batch of 2: each user's redelivered events fall into several commits
        replay_from = rng.randint(0, committed // 2)
        cfg, update = update_step(tmp_path, table, counts)
        sent_before = counts.sent_again
        run_log(update, table, messages[replay_from:], [2], 1, published)
        users = {m.key for m in messages[replay_from:committed]}
        assert 0 < counts.sent_again - sent_before <= len(users), f"seed {seed}"
        top: dict[bytes, int] = {}
        topic = cfg.kafka.topics.profile_updates
        for r in published:
            if r.topic == topic:
                v = orjson.loads(r.value)["version"]
                if v > top.get(r.key, 0):
                    assert v == top.get(r.key, 0) + 1, f"seed {seed}: {r.key!r} jumped to {v}"
                    top[r.key] = v


def test_events_up_to_a_bootstrap_hand_over_time_are_skipped_and_the_clock_keeps_it(tmp_path):
    table, counts = Table(), WorkerCounts()
    cfg, update = update_step(tmp_path, table, counts)
    p7 = PartitionCheck("murmur2", cfg.kafka.partitions).expected(b"7")
    table.store(p7)[PARTITION_KEY] = PartitionClock(D0 + 500, -1, D0 + 100).pack()
    outbox = Outbox()
    update.compute(RawBatch.of_records([Msg(p7, 0, event(7, D0 + 100), b"7"),     # in the state
                                        Msg(p7, 1, b"{not json", b"7"),
                                        Msg(p7, 2, event(7, D0 + 101), b"7"),
                                        Msg(p7, 3, event(7, D0 + 50), b"7")]), outbox)  # in it
    assert (counts.handed_over, counts.applied, counts.dead_lettered()) == (2, 1, 1)
    assert outbox.clocks == {p7: PartitionClock(D0 + 500, 3, D0 + 100)}


def test_a_clock_without_a_hand_over_packs_as_it_always_did():
    assert PartitionClock(5, 7).pack() == struct.pack("<qq", 5, 7)
    assert PartitionClock.unpack(struct.pack("<qq", 5, 7)) == PartitionClock(5, 7)
    assert PartitionClock.unpack(PartitionClock(5, 7, 3).pack()) == PartitionClock(5, 7, 3)
