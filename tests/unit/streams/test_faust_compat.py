"""The one seam into Faust's internals (streams/faust_compat): our copy of Faust's drain loop
is held against the original it was taken from, so a faust-streaming upgrade that changes the
original fails here, with the diff, instead of silently running an outdated copy."""
from __future__ import annotations

import pytest

from streams.faust_compat.drain import UpstreamChanged, check_upstream, stored_source
from streams.faust_compat.feed import ACK_COPY


def test_the_installed_faust_drain_loop_is_the_one_our_copy_was_taken_from():
    check_upstream()


def test_a_changed_original_fails_with_a_diff():
    changed = stored_source().replace("yield_every = 100", "yield_every = 10")
    with pytest.raises(UpstreamChanged) as info:
        check_upstream(stored=changed)
    assert "-        yield_every = 10\n" in str(info.value)
    assert "+        yield_every = 100\n" in str(info.value)


def test_the_installed_faust_getmany_is_the_one_our_fetched_runs_follows():
    from streams.faust_compat.drain import GETMANY_COPY, check_getmany_upstream
    check_getmany_upstream()
    changed = stored_source(GETMANY_COPY).replace("tp in self._buffered_partitions",
                                                  "tp in self._paused_partitions")
    with pytest.raises(UpstreamChanged, match="Consumer.getmany"):
        check_getmany_upstream(stored=changed)


def test_the_installed_faust_ack_is_the_one_our_batch_ack_follows():
    from streams.faust_compat.feed import check_ack_upstream
    check_ack_upstream()
    changed = stored_source(ACK_COPY).replace("self._n_acked += 1", "self._n_acked += 2")
    with pytest.raises(UpstreamChanged, match="Consumer.ack"):
        check_ack_upstream(stored=changed)


def test_a_batch_ack_leaves_the_consumer_as_faust_acking_each_message_does():
    """Acked offsets (what Faust commits), the ack count, and nothing left in flight; offsets
    below the committed one or acked before (fetched twice after a seek), and batches acked
    before, are not acked again."""
    import faust
    from faust.types import TP
    from faust.types.tuples import Message

    from streams.faust_compat import feed
    from streams.io.raw_batch import RawBatch

    def consumer_after(acking):
        app = faust.App(f"t-ack-{acking}", broker="kafka://127.0.0.1:1", store="memory://")
        app.topics._acking_topics.add("ev")       # as subscribing an agent to it does
        c = app.consumer
        c._committed_offset[TP("ev", 1)] = 3
        c._acked[TP("ev", 0)].append(7)
        c._acked_index[TP("ev", 0)].add(7)
        msgs = [Message("ev", p, o, 0.0, None, None, b"k", b"v", None)
                for p, o in ((0, 5), (0, 6), (1, 2), (0, 7), (1, 4), (1, 4))]
        batches = [RawBatch.of_records(msgs[:3]), RawBatch.of_records(msgs[3:])]
        for b in batches:
            feed.track(app, b)
        assert len(c._unacked_messages) == 2
        if acking == "faust":
            for m in msgs:
                c.ack(m)
            feed.untrack(app, batches)
        else:
            feed.ack(app, batches)
            feed.ack(app, batches[:1])          # acked twice: nothing more
        return (dict(c._acked), dict(c._acked_index), c._n_acked, len(c._unacked_messages))
    ours, faust_ = consumer_after("batch"), consumer_after("faust")
    assert ours == faust_
    assert ours[0] == {TP("ev", 0): [7, 5, 6], TP("ev", 1): [4]} and ours[3] == 0


def test_the_membership_watch_records_when_a_heartbeat_was_sent_that_the_coordinator_accepted():
    """aiokafka's heartbeat loop calls `self._do_heartbeat()` (True: accepted) and the coordinator
    has `request_rejoin`: what streams.faust_compat.membership wraps and calls."""
    import asyncio
    import inspect
    import time

    from aiokafka.consumer.group_coordinator import GroupCoordinator

    from streams.faust_compat.membership import MembershipWatch
    assert "await self._do_heartbeat()" in inspect.getsource(GroupCoordinator._heartbeat_routine)
    assert callable(GroupCoordinator.request_rejoin)

    class Coordinator:
        def __init__(self):
            self.answers, self.rejoins = [True, False], 0

        async def _do_heartbeat(self):
            await asyncio.sleep(0.05)       # the round trip: the send time is what counts
            return self.answers.pop(0)

        def request_rejoin(self):
            self.rejoins += 1

    class Consumer:
        _coordinator = Coordinator()

    async def run():
        watch = MembershipWatch()
        watch.attach(Consumer(), asyncio.get_running_loop())
        coordinator = Consumer._coordinator
        before = time.monotonic()
        assert await coordinator._do_heartbeat() is True
        accepted = watch.confirmed_at()
        assert before <= accepted < before + 0.04
        assert await coordinator._do_heartbeat() is False      # refused: no confirmation
        assert watch.confirmed_at() == accepted
        watch.request_rejoin()
        await asyncio.sleep(0)
        assert coordinator.rejoins == 1
        watch.joined()                                          # an assignment confirms
        assert watch.confirmed_at() > accepted

    asyncio.run(run())


def test_the_leader_partition_is_paused_in_aiokafka_at_each_assignment(tmp_path):
    """Faust's leader topic carries no record; fetched alone it held every fetch to its broker
    for the whole fetch max wait (docs/FAUST_INTERNALS.md#fetches)."""
    from types import SimpleNamespace

    from aiokafka import TopicPartition
    from faust.types import TP

    from features.config import parse_config
    from streams.app import create_app, instance_for
    from streams.faust_compat.consumer import ProfilesConsumerThread
    cfg = parse_config({"worker": {"data_dir": str(tmp_path)}}, env={})
    app = create_app(cfg, instance_for(cfg, 1))
    leader = app._leader_assignor._leader_tp          # the seam: Faust's own leader partition
    assert leader == TP(f"{cfg.worker.app_id}-__assignor-__leader", 0)
    paused: list = []
    thread = SimpleNamespace(app=app, _consumer=SimpleNamespace(pause=paused.append))
    events = TP("user-events", 0)
    ProfilesConsumerThread._pause_leader_partition(thread, {events, leader})
    assert paused == [TopicPartition(leader.topic, 0)]
    ProfilesConsumerThread._pause_leader_partition(thread, {events})     # another leads
    assert paused == [TopicPartition(leader.topic, 0)]


def test_topic_creation_waits_for_the_metadata_to_name_a_broker(tmp_path, monkeypatch):
    """A broker in its controlled shutdown answers Metadata with no brokers; Faust raised
    "Controller node not found" at once and the starting worker exited (a chaos run)."""
    import asyncio
    from types import SimpleNamespace

    from features.config import parse_config
    from streams.app import create_app, instance_for
    from streams.faust_compat import consumer as compat_consumer
    cfg = parse_config({"worker": {"data_dir": str(tmp_path)}}, env={})
    transport = create_app(cfg, instance_for(cfg, 1)).transport
    answers = [[], [], [SimpleNamespace(nodeId=1)]]     # no broker twice, then one
    asked: list[str] = []

    class Client:
        cluster = SimpleNamespace(brokers=lambda: answers[0])

        async def force_metadata_update(self):
            asked.append("metadata")
            answers.pop(0)

        async def send(self, node_id, request):
            return SimpleNamespace(controller_id=node_id)

    class Owner:
        should_stop = False
        log = SimpleNamespace(warning=lambda *a: None, info=lambda *a: None)

        async def wait(self, coro, timeout):
            return SimpleNamespace(stopped=False, result=await coro)

    async def no_sleep(_):
        return None
    monkeypatch.setattr(compat_consumer.asyncio, "sleep", no_sleep)
    assert asyncio.run(transport._get_controller_node(Owner(), Client())) == 1
    assert asked == ["metadata", "metadata"]


def test_the_tables_stores_do_not_keep_a_revoked_partitions_database_open(tmp_path):
    """Faust drops a revoked partition's database without closing it; it closes when the last
    reference goes, and the partition can be opened again when it comes back. A store handed
    out by the table must not be that last reference (a cached wrapper once was: the worker
    could not reopen its own partition, 'lock hold by current process')."""
    from types import SimpleNamespace

    from streams.faust_compat.tables import PartitionedTable
    from streams.state.rocksdb import open_store

    path = tmp_path / "user-state-0.db"
    first = open_store(path)
    first.put(b"1", b"v")
    faust_store = SimpleNamespace(_dbs={0: first.db})
    faust_store._db_for_partition = lambda p: faust_store._dbs[p]
    table = PartitionedTable(SimpleNamespace(name="user-state", data=faust_store), "events")
    assert table.get(0, b"1") == b"v" and table.store(0).get(b"1") == b"v"
    assert table.open_store(0) is not None
    del faust_store._dbs[0], first                  # revoked: Faust forgets it, unclosed
    again = open_store(path)                        # assigned again: opened anew
    assert again.get(b"1") == b"v"
    again.close()


def test_the_installed_faust_recovery_loop_is_the_one_our_bulk_restore_follows():
    from streams.faust_compat.changelog_restore import SLURP_COPY, check_upstream
    check_upstream()
    changed = stored_source(SLURP_COPY).replace("if len(buf) >= bufsize:", "if len(buf) > bufsize:")
    with pytest.raises(UpstreamChanged, match="_slurp_changelogs"):
        check_upstream(stored=changed)


class RecoveryBeingBuilt:
    """What changelog_restore reads of a Recovery, in a rebalance whose active offsets are
    being built: `need_recovery()` still reads the previous assignment's highwaters, which say
    nothing is left."""

    def __init__(self, built: bool):
        import asyncio
        self.in_recovery = True
        self.actives_built = built
        self.signal_recovery_end = asyncio.Event()
        self._actives_span = self._standbys_span = None
        self.tables = type("Tables", (), {"standbys_ready": True})()
        self.ended = 0

    def need_recovery(self) -> bool:
        return False

    def flush_buffers(self) -> None:
        pass

    def _set_recovery_ended(self) -> None:
        self.in_recovery = False
        self.ended += 1

    def standby_remaining_total(self) -> int:
        return 0


def test_a_restored_run_ends_the_recovery_only_once_this_rebalances_actives_are_built():
    """A standby's run restored while the recovery builds its active offsets must not end it:
    the recovery would then wait for that end signal, find it set, and go on without restoring
    a newly active partition (make chaos with standbys, seed 52: 1,055 events lost)."""
    from streams.faust_compat import changelog_restore
    building = RecoveryBeingBuilt(built=False)
    changelog_restore._after_records(building)
    assert building.in_recovery and not building.signal_recovery_end.is_set()
    assert building.ended == 0
    built = RecoveryBeingBuilt(built=True)
    changelog_restore._after_records(built)
    assert built.signal_recovery_end.is_set() and not built.in_recovery and built.ended == 1


class RecoveryAtMarkers(RecoveryBeingBuilt):
    """A recovery whose partitions' last offsets are transaction markers: the last record of
    active partition 0 is at 6, its highwater (end offset less one) 7; standby partition 1 has
    everything but its highwater 3 is a marker too; partition 2 still has records to read."""

    def __init__(self):
        super().__init__(built=True)
        from faust.types import TP

        class Data:
            def __init__(self):
                self.persisted: dict = {}

            def persisted_offset(self, tp):
                return self.persisted.get(tp)

            def set_persisted_offset(self, tp, offset):
                self.persisted[tp] = offset

        self.tp = [TP("app-user-state-changelog", p) for p in range(3)]
        table = type("Table", (), {"data": Data(), "_on_changelog_event": None})()
        self.data = table.data
        self.active_tps = {self.tp[0], self.tp[2]}
        self.standby_tps = {self.tp[1]}
        self.active_offsets = {self.tp[0]: 6, self.tp[2]: 10}
        self.active_highwaters = {self.tp[0]: 7, self.tp[2]: 20}
        self.standby_offsets = {self.tp[1]: 2}
        self.standby_highwaters = {self.tp[1]: 3}
        self.tp_to_table = {tp: table for tp in self.tp}
        self.tables = type("Tables", (), {"standbys_ready": False,
                                          "on_standbys_ready": lambda s: None})()

    def need_recovery(self) -> bool:
        return any(self.active_highwaters[tp] > o for tp, o in self.active_offsets.items())

    def standby_remaining_total(self) -> int:
        return sum(self.standby_highwaters[tp] - o for tp, o in self.standby_offsets.items())


def test_partitions_read_past_their_highwater_are_restored_though_it_is_a_marker():
    """Under read_committed, an offset no record comes for (a transaction marker, an aborted
    record) ends a changelog partition: once the fetch position passes the highwater the
    partition counts as restored, and its store as holding everything up to it. Faust's loop
    would wait for a record at the highwater for ever."""
    from streams.faust_compat import changelog_restore
    r = RecoveryAtMarkers()
    positions = {r.tp[0]: 7, r.tp[1]: 4, r.tp[2]: 11}
    assert changelog_restore.past_markers(r, positions.get) == 1     # partition 1 only
    assert r.standby_offsets[r.tp[1]] == 3 and r.data.persisted == {r.tp[1]: 3}
    assert r.active_offsets == {r.tp[0]: 6, r.tp[2]: 10} and r.in_recovery
    positions[r.tp[0]] = 8                  # past the marker at 7
    assert changelog_restore.past_markers(r, positions.get) == 1
    assert r.active_offsets[r.tp[0]] == 7 and r.data.persisted[r.tp[0]] == 7
    assert r.in_recovery                    # partition 2 has records left
    r.active_offsets[r.tp[2]] = 20
    assert changelog_restore.past_markers(r, positions.get) == 0
