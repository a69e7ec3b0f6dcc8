"""Workers and a broker outage, against the real embedded broker paused for 20 s (as in the chaos
run). Two things must wait it out, and each once did not (the chaos runs lost a worker to each):
- a worker (re)started meanwhile: its start-up topic check gave up after 10 s and the process
  exited;
- table recovery's changelog end offsets, read from a fetch on this broker
  (streams.faust_compat.consumer): that read gave up after 15 s and Faust's recovery crashed the
  worker.
And a running worker sees that the group coordinator stopped confirming it (the fencing signal,
streams.faust_compat.membership), then rejoins by itself with every state and profile exact."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy import broker as embedded
from deploy.clients import latest_by_key, produce_events
from features.config import load_config
from streams.faust_compat.consumer import fetched_end_offsets
from tests.harness import (
    http_json,
    profile_worker,
    state_diffs,
    wait_for,
    write_config,
    write_events,
)
from tools.verify import batch_profiles, compare

pytestmark = pytest.mark.integration

PAUSE = 20.0


async def _fill(bootstrap: str, topic: str, n: int) -> None:
    """n records in multi-record batches (ListOffsets answers low for them: BROKER.md)."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await p.start()
    try:
        await asyncio.gather(*[await p.send(topic, b"x", partition=0) for _ in range(n)])
    finally:
        await p.stop()


def test_a_broker_pause_is_waited_out_by_start_up_and_by_recovery(broker, workers, tmp_path,
                                                                  monkeypatch):
    asyncio.run(_fill(broker.bootstrap, "changelog-like", 50))
    cfg = write_config(tmp_path / "cfg.yaml", broker)
    pid = embedded.status(broker.run_dir).pid
    w = profile_worker(workers, cfg, 1, embedded.free_port(), "worker")
    resume = threading.Timer(PAUSE, os.kill, (pid, signal.SIGCONT))
    real_getmany = AIOKafkaConsumer.getmany

    async def getmany_pausing(self, *args, **kwargs):
        # the pause begins once the end-offset reader has bootstrapped, before its first fetch
        if not resume.is_alive() and not resume.finished.is_set():
            os.kill(pid, signal.SIGSTOP)
            resume.start()
        return await real_getmany(self, *args, **kwargs)

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany_pausing)
    ends: dict = {}

    def read_ends() -> None:
        try:
            ends["got"] = asyncio.run(fetched_end_offsets(
                broker.bootstrap, {}, {("changelog-like", 0): 1}))
        except Exception as e:          # the assertion below shows it
            ends["error"] = repr(e)

    try:
        w.start()                       # it reaches the broker a few seconds later: paused
        reader = threading.Thread(target=read_ends)
        reader.start()
        reader.join(PAUSE + 60)
        resume.join(PAUSE + 5)
    finally:
        resume.cancel()
        os.kill(pid, signal.SIGCONT)
    problems = []
    if w.proc.poll() is not None:
        problems.append(f"the worker exited during the pause:\n{w.tail()}")
    if ends != {"got": {("changelog-like", 0): 50}}:
        problems.append(f"changelog end offsets: {ends}")
    assert not problems, "\n".join(problems)
    assert w.wait_healthy(120)["status"] == "ok"


def test_a_worker_the_coordinator_stops_confirming_knows_it_and_comes_back_exact(
        broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2})
    cfg = load_config(cfg_path, env={})
    w = profile_worker(workers, cfg_path, 1, embedded.free_port(), "w").start()
    w.wait_healthy()
    now = int(time.time())
    events = write_events(tmp_path / "events.jsonl", range(1, 81), now - 3 * 86400, 5)
    lines = events.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"".join(lines[:200]))
    second.write_bytes(b"".join(lines[200:]))
    ids = list(range(1, 81))

    def confirmed_ago() -> float:
        return http_json(w.url("/health"))[1]["membership_confirmed_ago"]

    assert confirmed_ago() < 3.0                        # a heartbeat accepted every second
    produce_events(cfg, first, progress=None)
    pid = embedded.status(broker.run_dir).pid
    os.kill(pid, signal.SIGSTOP)
    try:
        # past half the session timeout (10 s): the worker's commits would be fenced now
        assert wait_for(lambda: confirmed_ago() > 6.0, 12, 0.5,
                        what="membership unconfirmed for over half the session timeout")
        time.sleep(PAUSE - 8)
    finally:
        os.kill(pid, signal.SIGCONT)
    # the broker expired it meanwhile: it rejoins by itself, confirmed again
    assert wait_for(lambda: w.proc.poll() is None and confirmed_ago() < 3.0, 90, 1,
                    what="confirmed again after the pause"), w.tail()
    w.wait_healthy(90)
    produce_events(cfg, second, progress=None)
    assert wait_for(lambda: not state_diffs(cfg, w, events, ids), 90, 1,
                    what="states equal to the batch path"), state_diffs(cfg, w, events, ids)
    expected = batch_profiles(cfg, None, events, tmp_path / "batch.jsonl")
    published = {int(k): v for k, v in latest_by_key(cfg, cfg.kafka.topics.profile_updates).items()}
    c = compare(published, expected)
    assert c.ok, (c.summary(), c.mismatched[:3])
    assert w.proc.poll() is None, "the worker was restarted, not rejoined"
