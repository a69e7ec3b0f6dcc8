"""Records fetched before a seek and handled after it (streams.faust_compat.consumer): Faust's
real consumer and drain loop, with the client thread replaced by an in-memory partition log so
the race is deterministic. The chaos run hit it against the real broker: a fetch from before the
seek at the end of a rebalance went on being handled after the seek had reset the read offset,
Faust marked
the offsets between as a gap (acked), and the commit passed over events nobody processed."""
from __future__ import annotations

import asyncio

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from features.config import load_config
from streams.app import create_app, instance_for
from streams.io import event_feed

TOPIC = "user-events"
TP = TopicPartition(TOPIC, 0)


class PartitionLog:
    """The consumer thread's side: one partition of offsets 0..end-1 read from a position."""

    def __init__(self, end: int, position: int, committed: int | None):
        self.end, self.position, self.committed = end, position, committed
        self.fetched: list[int] = []
        self.fetches = 0            # answers that held records

    async def getmany(self, active_partitions, timeout):
        await asyncio.sleep(0)
        if self.position >= self.end:
            await asyncio.sleep(0.01)
            return {}
        offsets = range(self.position, min(self.position + 50, self.end))
        self.position = offsets[-1] + 1
        self.fetched.extend(offsets)
        self.fetches += 1
        return {TP: [ConsumerRecord(TOPIC, 0, o, 0, 0, str(o).encode(), b"{}", None, 1, 2, [])
                     for o in offsets]}

    async def seek_to_committed(self):
        await asyncio.sleep(0)
        if self.committed:
            self.position = self.committed
        return {TP: self.committed}

    async def seek_to_beginning(self, *tps):
        self.position = 0

    def seek(self, tp, offset):
        self.position = offset

    async def commit(self, offsets):
        return False        # as Faust's driver answers a commit the group refused (rebalanced)

    def assignment(self):
        return {TP}

    def highwater(self, tp):
        return self.end


def _drain(tmp_path, client: PartitionLog, capacity: int):
    path = tmp_path / "profiles.yaml"
    path.write_text(f"worker:\n  data_dir: {tmp_path / 'data'}\n")
    cfg = load_config(path)
    app = create_app(cfg, instance_for(cfg, 1))
    feed = event_feed.install(app, TOPIC, capacity=capacity)
    consumer = app.consumer
    consumer._thread = client
    consumer._set_active_tps({TP})
    app.flow_control.resume()
    consumer.resume_flow()
    return app, consumer, feed


class _Fetcher:
    def __init__(self):
        self._stopped = asyncio.Event()


async def _take_until(feed, last: int) -> list[int]:
    seen: list[int] = []
    while not seen or seen[-1] < last:
        batch = await asyncio.wait_for(feed.take(10, within=0), 10)
        seen.extend(batch.offsets)
    return seen


def _seek_while_holding_a_fetch(tmp_path, client: PartitionLog, last: int, before_seek=None):
    """Fill a 5-record feed (the drain loop then holds the next fetch's run, waiting for room),
    empty it, seek to the committed offsets as the end of a rebalance does, and take what the
    feed gets until offset `last`. Returns (offsets taken before the seek, after it, consumer,
    feed)."""
    async def run():
        app, consumer, feed = _drain(tmp_path, client, capacity=5)
        fetcher = _Fetcher()
        drain = asyncio.create_task(consumer._drain_messages(fetcher))
        # the second fetch answered: the drain holds its run (waiting for room). Waiting for a
        # full feed alone let a slow machine seek while that fetch had not read its position
        # yet, so it read from the committed offset and nothing was stale to drop.
        while not feed.full() or client.fetches < 2:
            await asyncio.sleep(0.001)
        before = (await feed.take(5, within=0)).offsets
        feed.clear()
        if before_seek is not None:
            await before_seek(consumer)
        # Faust's seek resets its read offsets to the committed ones
        await consumer.perform_seek()
        after = await _take_until(feed, last)
        fetcher._stopped.set()
        consumer._stopped.set()
        await asyncio.wait_for(drain, 10)
        return before, after, consumer, feed
    return asyncio.run(run())


def test_records_fetched_before_a_seek_are_fetched_again_from_the_committed_offset(tmp_path):
    # the client is at 920 (it read ahead before the rebalance); the group committed 749
    client = PartitionLog(end=1200, position=920, committed=749)
    before, after, consumer, feed = _seek_while_holding_a_fetch(tmp_path, client, 1000)
    assert before == [920, 921, 922, 923, 924]
    # from the committed offset, in order, nothing skipped; the held and in-hand records of the
    # old fetch were dropped and read again
    assert after == list(range(749, after[-1] + 1))
    assert feed.stale_dropped > 0
    assert not consumer._gap[TP]                # no offsets counted as acked without a read


def test_a_partition_without_a_commit_is_read_again_from_the_start_after_a_seek(tmp_path):
    client = PartitionLog(end=400, position=120, committed=None)
    _, after, _, _ = _seek_while_holding_a_fetch(tmp_path, client, 200)
    assert after == list(range(0, after[-1] + 1))


class JumpingLog(PartitionLog):
    """A fetch answers from far ahead of what was read (as a make chaos run on Apache Kafka saw:
    the drain took offset 20,770 after 2,226, and Faust counted the rest acked); the log starts
    at `start` (retention deleted what came before)."""

    def __init__(self, end: int, committed: int | None, jump_at: int, jump_to: int,
                 start: int = 0):
        super().__init__(end, committed or start, committed)
        self.jump_at, self.jump_to, self.start, self.sought = jump_at, jump_to, start, 0

    async def seek_to_committed(self):
        self.sought += 1
        return await super().seek_to_committed()

    async def seek_to_beginning(self, *tps):
        self.position = self.start

    async def getmany(self, active_partitions, timeout):
        if self.jump_to is not None and self.position >= self.jump_at:
            self.position, self.jump_to = self.jump_to, None
        return await super().getmany(active_partitions, timeout)

    async def earliest_offsets(self, *tps):
        return {tp: self.start for tp in tps}


def _drain_until(tmp_path, client: PartitionLog, last: int):
    async def run():
        app, consumer, feed = _drain(tmp_path, client, capacity=10_000)
        await consumer.perform_seek()           # the end of a rebalance: at the committed offset
        fetcher = _Fetcher()
        drain = asyncio.create_task(consumer._drain_messages(fetcher))
        seen = await _take_until(feed, last)
        seen = seen[:seen.index(last) + 1]
        fetcher._stopped.set()
        consumer._stopped.set()
        await asyncio.wait_for(drain, 10)
        return seen, consumer
    return asyncio.run(run())


def test_a_position_that_jumps_ahead_is_read_again_never_acked(tmp_path):
    client = JumpingLog(end=700, committed=100, jump_at=150, jump_to=500)
    seen, consumer = _drain_until(tmp_path, client, 650)
    assert not consumer._gap[TP]                # nothing counted as acked without a read
    assert client.sought == 2                   # sought back to the committed offset
    again = seen.index(100, 1)                  # read again from the committed offset, in order
    assert seen[:again] == list(range(100, 150)) and seen[again:] == list(range(100, 651))


def test_a_jump_over_offsets_retention_deleted_goes_on(tmp_path):
    client = JumpingLog(end=700, committed=100, jump_at=150, jump_to=500, start=400)
    seen, consumer = _drain_until(tmp_path, client, 650)
    assert client.sought == 1                   # not sought back: those offsets are gone
    assert seen == list(range(100, 150)) + list(range(500, 651))


# make chaos seed 45 on Apache Kafka (docs/FAUST_INTERNALS.md#offsets-after-a-revoke): a worker
# lost partition 0 in a rebalance while its last commit of it was on its way; the commit failed
# (the group had rebalanced) and Faust recorded the offset as committed anyway, after the revoke
# had cleared its bookkeeping. The partition came back to the same worker with no commit on the
# broker: the seek after a stale fetch left it where the dropped fetch had ended (the recorded
# offset said it had a commit), the drain took the next record as the first (no read offset to
# compare), and 622 events were never applied.

async def _failed_commit_then_new_assignment(consumer) -> None:
    """What the revoke's wait for in-flight messages did, then the next assignment."""
    consumer._acked[TP].extend(range(0, 50))
    consumer._acked_index[TP].update(range(0, 50))
    assert await consumer._commit_offsets({TP: 50}) is False
    # Faust records the refused commit as done: what the next assignment must not trust
    assert consumer._committed_offset[TP] == 50
    # and a batch delivered after the revoke is acked into the cleared bookkeeping
    consumer._acked[TP].extend(range(50, 60))
    consumer._acked_index[TP].update(range(50, 60))
    consumer._on_partitions_assigned = _nothing
    await consumer.on_partitions_assigned({TP}, 7)


async def _nothing(*args, **kwargs) -> None:
    return None


def test_a_commit_refused_in_a_revoke_is_forgotten_at_the_next_assignment(tmp_path):
    client = PartitionLog(end=400, position=120, committed=None)
    _, after, consumer, _ = _seek_while_holding_a_fetch(
        tmp_path, client, 200, before_seek=_failed_commit_then_new_assignment)
    assert after == list(range(0, after[-1] + 1))       # from the start: nothing was committed
    assert consumer._committed_offset[TP] is None
    assert not consumer._acked[TP] and not consumer._acked_index[TP]


async def _recorded_commit_without_a_broker_commit(consumer) -> None:
    consumer._committed_offset[TP] = 50


def test_a_partition_the_broker_has_no_commit_of_is_read_from_the_start(tmp_path):
    # whatever the consumer's bookkeeping says: the broker's answer decides
    client = PartitionLog(end=400, position=120, committed=None)
    _, after, consumer, _ = _seek_while_holding_a_fetch(
        tmp_path, client, 200, before_seek=_recorded_commit_without_a_broker_commit)
    assert after == list(range(0, after[-1] + 1))
    assert consumer._committed_offset[TP] is None


def test_a_jump_before_the_first_record_of_an_uncommitted_partition_is_read_again(tmp_path):
    client = JumpingLog(end=700, committed=None, jump_at=0, jump_to=500)
    seen, consumer = _drain_until(tmp_path, client, 650)
    assert not consumer._gap[TP]
    assert client.sought == 2                   # sought back to the start
    assert seen[0] == 0 and seen == list(range(0, 651))


def test_a_jump_past_the_committed_offset_before_the_first_record_is_read_again(tmp_path):
    client = JumpingLog(end=700, committed=100, jump_at=100, jump_to=101)
    seen, consumer = _drain_until(tmp_path, client, 650)
    assert not consumer._gap[TP]
    assert seen == list(range(100, 651))        # 100 was not passed over


def test_faust_s_event_path_check_skips_a_partition_whose_seek_to_the_start_is_pending():
    # make chaos on Apache Kafka: Faust's livelock check read aiokafka's position of a partition
    # just sought to its start (reset lazily, so unset until the next fetch), and the assertion
    # there crashed the consumer and the worker
    from types import SimpleNamespace

    from aiokafka.consumer.fetcher import OffsetResetStrategy
    from aiokafka.consumer.subscription_state import SubscriptionState

    from streams.faust_compat.consumer import ProfilesConsumerThread, position_known

    async def run():
        subs = SubscriptionState()
        subs.subscribe({TOPIC})
        subs.assign_from_subscribed({TP})
        client = SimpleNamespace(_fetcher=SimpleNamespace(_subscriptions=subs))
        state = subs.subscription.assignment.state_value(TP)
        state.seek(10)
        assert position_known(client, TP)
        state.await_reset(OffsetResetStrategy.EARLIEST)         # what seek_to_beginning does
        assert not position_known(client, TP)
        assert not position_known(client, TopicPartition(TOPIC, 9))       # not assigned
        assert not position_known(SimpleNamespace(_fetcher=None), TP)     # not started
        thread = SimpleNamespace(app=SimpleNamespace(conf=SimpleNamespace(
            topic_disable_leader=True)), _consumer=client)
        # skipped, never reaching Faust's check (which reads the position)
        assert ProfilesConsumerThread.verify_event_path(thread, 0.0, TP) is None
    asyncio.run(run())


CHANGELOG = TopicPartition("user-profiles-user-state-changelog", 0)


class LogWithAChangelog(PartitionLog):
    """One fetch holds user-events records and five of a table's changelog (as during table
    recovery), then nothing more."""

    def __init__(self):
        super().__init__(end=20, position=0, committed=None)
        self.served = False

    async def getmany(self, active_partitions, timeout):
        await asyncio.sleep(0)
        if self.served:
            await asyncio.sleep(0.01)
            return {}
        self.served = True
        return {TP: [ConsumerRecord(TOPIC, 0, o, 0, 0, str(o).encode(), b"{}", None, 1, 2, [])
                     for o in range(20)],
                CHANGELOG: [ConsumerRecord(CHANGELOG.topic, 0, o, 0, 0, b"k", b"v", None, 1, 1,
                                           []) for o in range(5)]}


def test_other_topics_records_go_to_faust_one_by_one_until_the_generation_changes(tmp_path):
    """The feed's partition arrives as one run; a changelog's records reach Faust's callback as
    messages, each after the original getmany's checks: a generation that changes while one is
    handled stops the rest of the fetch, as Faust's own loop does."""
    async def run():
        client = LogWithAChangelog()
        app, consumer, feed = _drain(tmp_path, client, capacity=10_000)
        consumer._set_active_tps({TP, CHANGELOG})
        handed: list[int] = []

        async def callback(message):
            handed.append(message.offset)
            assert message.topic == CHANGELOG.topic and message.value == b"v"
            if message.offset == 1:
                app.consumer_generation_id = (app.consumer_generation_id or 0) + 1
        consumer.callback = callback
        fetcher = _Fetcher()
        drain = asyncio.create_task(consumer._drain_messages(fetcher))
        batch = await asyncio.wait_for(feed.take(100, within=0), 10)
        for _ in range(100):
            await asyncio.sleep(0.01)
        fetcher._stopped.set()
        consumer._stopped.set()
        await asyncio.wait_for(drain, 10)
        return batch, handed
    batch, handed = asyncio.run(run())
    assert batch.offsets == list(range(20)) and len(batch.runs) == 1
    assert handed == [0, 1]
