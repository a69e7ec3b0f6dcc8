"""Workers and a broker outage, against the real embedded broker paused for 20 s (as in the chaos
run). Two things must wait it out, and each once did not (the chaos runs lost a worker to each):
- a worker (re)started meanwhile: its start-up topic check gave up after 10 s and the process
  exited;
- table recovery's changelog end offsets, read from a fetch on this broker
  (streams.faust_compat.consumer): that read gave up after 15 s and Faust's recovery crashed the
  worker."""
from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy import broker as embedded
from streams.faust_compat.consumer import fetched_end_offsets
from tests.harness import profile_worker, write_config

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
