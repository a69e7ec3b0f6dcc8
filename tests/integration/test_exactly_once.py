"""`kafka.processing_guarantee: exactly_once_v2` on the embedded broker (issue 27): each commit of
a worker is one Kafka transaction holding its changelog states, its output records and the
group's offsets.
- Two workers with standby copies: the stream is exact (states and published profiles equal
  the batch path's, read with read_committed), and a SIGKILLed worker's partitions are taken
  over from the standby copy, through the transaction markers in the changelog.
- A worker frozen (SIGSTOP) past its session with a transaction open, its timer fencing off:
  the new owner publishes, and once the frozen one thaws nothing it had written or queued
  becomes visible to a read_committed reader (acceptance 2)."""
from __future__ import annotations

import asyncio
import signal
import threading
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from deploy.worker_process import worker_argv
from features.config import load_config
from tests.harness import (
    _topic_partitions,
    caught_up,
    owned_partitions,
    profile_worker,
    published_vs_batch,
    read_topic,
    split_sample,
    state_diffs,
    wait_for,
    write_config,
    write_events,
)
from tools.data.sample import SampleSpec

pytestmark = pytest.mark.integration
# the broker's least session timeout: a dead or frozen worker's partitions move after 6 s
CLIENT = {"session_timeout_seconds": 6, "heartbeat_interval_seconds": 1}
EOS = {"processing_guarantee": "exactly_once_v2", "client": CLIENT}


def test_two_workers_with_standbys_are_exact_through_a_kill(broker, workers, tmp_path):
    sample, every, first, rest = split_sample(tmp_path, SampleSpec(users=300, days=30,
                                                                   activity=0.5, seed=9))
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 4, **EOS},
                            worker={"standby_replicas": 1},
                            real_time_update={"batch_size": 500})
    cfg = load_config(cfg_path, env={})
    items = sample / "item_feat_dict.json"
    load_items(cfg, items, progress=None)
    w1 = profile_worker(workers, cfg_path, 1, free_port(), "w1").start()
    w2 = profile_worker(workers, cfg_path, 2, free_port(), "w2").start()
    w1.wait_healthy()
    w2.wait_healthy()
    assert wait_for(lambda: len(owned_partitions(w1)) == len(owned_partitions(w2)) == 2, 60,
                    what="two members with half the partitions each")
    produce_events(cfg, first, progress=None)
    caught_up(cfg)                  # the offsets are committed in the commits' transactions
    ids = list(range(1, 301))
    c = published_vs_batch(cfg, first, tmp_path / "batch-first.jsonl", items)
    assert c.ok, (c.summary(), c.mismatched[:2], c.missing[:5])
    w1.kill(signal.SIGKILL)
    assert wait_for(lambda: owned_partitions(w2) == [0, 1, 2, 3], 60, interval=0.25,
                    what="w2 owns every partition")
    w2.wait_healthy()
    assert not state_diffs(cfg, w2, first, ids)
    produce_events(cfg, rest, progress=None)
    assert wait_for(lambda: not state_diffs(cfg, w2, every, ids), 60, interval=0.5,
                    what="every state equal to the batch path's"), \
        state_diffs(cfg, w2, every, ids)
    caught_up(cfg)
    c = published_vs_batch(cfg, every, tmp_path / "batch.jsonl", items)
    assert c.ok, (c.summary(), c.mismatched[:2], c.missing[:5])


def _open_transactions(cfg, topic: str) -> dict[int, tuple[int, int]]:
    """Partitions of `topic` holding records of a transaction not yet ended: partition ->
    (last stable offset, high watermark), the offsets a read_committed reader waits at."""
    async def ends(isolation_level: str) -> dict[int, int]:
        c = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers, group_id=None,
                             enable_auto_commit=False, isolation_level=isolation_level)
        await c.start()
        try:
            tps = await _topic_partitions(c, topic)
            return {tp.partition: o for tp, o in (await c.end_offsets(tps)).items()}
        finally:
            await c.stop()

    async def run() -> dict[int, tuple[int, int]]:
        high, stable = await ends("read_uncommitted"), await ends("read_committed")
        return {p: (stable[p], high[p]) for p in high if stable[p] < high[p]}
    return asyncio.run(run())


def test_a_frozen_workers_open_transaction_never_becomes_visible(broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2, **EOS},
                            real_time_update={"batch_size": 200})
    cfg = load_config(cfg_path, env={})
    updates = cfg.kafka.topics.profile_updates
    events = write_events(tmp_path / "events.jsonl", range(1, 2001),
                          int(time.time()) - 3 * 86400, 10)
    port_a = free_port()
    # its timer fencing off: what keeps the frozen worker's records out is the broker's
    a = workers(worker_argv(cfg_path, 1, port_a), port_a, "a",
                env={"PROFILES_FENCING": "off"}).start()
    a.wait_healthy()
    producing = threading.Thread(target=produce_events, args=(cfg, events),
                                 kwargs={"rate": 2000, "progress": None})
    producing.start()
    # Freeze it while one of its commits' transactions holds records on the broker: seen open,
    # stopped, and still open half a second later (its commits take milliseconds)
    frozen: dict[int, tuple[int, int]] = {}
    while producing.is_alive() and not frozen:
        if _open_transactions(cfg, updates):
            a.kill(signal.SIGSTOP)
            time.sleep(0.5)
            frozen = _open_transactions(cfg, updates)
            if not frozen:
                a.kill(signal.SIGCONT)
    assert frozen, "no transaction of the worker was seen open while it processed"
    try:
        # a new owner takes both partitions once the frozen one's session has expired
        b = profile_worker(workers, cfg_path, 2, free_port(), "b").start()
        assert wait_for(lambda: owned_partitions(b) == [0, 1], 60, interval=0.25,
                        what="the new worker owns every partition")
        producing.join()
        caught_up(cfg, timeout=120)     # its transactions committed the end of every partition
    finally:
        a.kill(signal.SIGCONT)
    assert wait_for(lambda: a.alive() and
                    len(owned_partitions(a)) == len(owned_partitions(b)) == 1, 90,
                    interval=0.25, what="the thawed worker back in the group"), a.tail()
    caught_up(cfg, timeout=60)

    seen = read_topic(cfg, updates, "read_uncommitted")
    committed = read_topic(cfg, updates)            # read_committed
    queued = [r for r in seen if r.partition in frozen and
              frozen[r.partition][0] <= r.offset < frozen[r.partition][1]]
    assert queued
    visible = {(r.partition, r.offset) for r in committed}
    assert not [r for r in queued if (r.partition, r.offset) in visible]
    # the new owner published their users again, after them
    last_at = {r.key: (r.partition, r.offset) for r in committed}
    assert all(last_at[r.key] > (r.partition, r.offset) for r in queued)
    # a read_committed reader sees no user's version go back, and the batch path's profiles
    best: dict[bytes, int] = {}
    for r in committed:
        version = orjson.loads(r.value)["version"]
        assert version >= best.get(r.key, -1), (r.key, version, best[r.key])
        best[r.key] = version
    c = published_vs_batch(cfg, events, tmp_path / "batch.jsonl")
    assert c.ok, (c.summary(), c.mismatched[:2], c.missing[:5])
