"""Workers and a broker outage, against the real embedded broker paused for 20 s (as in the chaos
run):
- a worker (re)started meanwhile waits it out: its start-up topic check once gave up after 10 s
  and the process exited (a chaos run lost a worker to it);
- a worker started while every connection to the broker is cut again and again starts again in
  place until one holds (Faust's start gives up on its first failed bootstrap: make chaos on
  Apache Kafka lost two workers to it);
- a running worker sees that the group coordinator stopped confirming it (the fencing signal,
  streams.faust_compat.membership), then rejoins by itself with every state and profile exact."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from deploy import broker as embedded
from deploy.clients import produce_events
from features.config import load_config
from tests.harness import (
    Broker,
    http_json,
    profile_worker,
    published_vs_batch,
    state_diffs,
    wait_for,
    write_config,
    write_events,
)
from tools.chaos.proxy import BrokerProxy

pytestmark = pytest.mark.integration

PAUSE = 20.0
CUTTING = 12.0


def test_a_worker_started_during_a_broker_pause_waits_it_out(broker, workers, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", broker)
    pid = embedded.status(broker.run_dir).pid
    w = profile_worker(workers, cfg, 1, embedded.free_port(), "worker")
    os.kill(pid, signal.SIGSTOP)
    try:
        w.start()                       # its topic check and group join meet a silent broker
        time.sleep(PAUSE)
        assert w.proc.poll() is None, f"the worker exited during the pause:\n{w.tail()}"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert w.wait_healthy(120)["status"] == "ok"


def test_a_worker_started_while_its_connections_are_cut_starts_again_in_place(workers,
                                                                             tmp_path):
    port, proxy_port = embedded.free_port(), embedded.free_port()
    run_dir = tmp_path / "broker-run"
    embedded.start(run_dir, port, timeout=30, advertised_port=proxy_port)
    proxy = BrokerProxy(proxy_port, port).start()
    stop_cutting = threading.Event()

    def cut_again_and_again() -> None:
        while not stop_cutting.wait(0.2):
            proxy.cut_all()

    cfg = write_config(tmp_path / "cfg.yaml", Broker(proxy_port, run_dir))
    w = profile_worker(workers, cfg, 1, embedded.free_port(), "worker")
    try:
        w.start()
        cutter = threading.Thread(target=cut_again_and_again, daemon=True)
        cutter.start()
        time.sleep(CUTTING)             # Faust's start is 2-4 s after the process's
        stop_cutting.set()
        cutter.join(5)
        assert w.proc.poll() is None, f"the worker exited while its connections were cut:\n" \
                                      f"{w.tail()}"
        assert proxy.cuts > 30
        assert w.wait_healthy(120)["status"] == "ok"
        assert w.proc.poll() is None
    finally:
        stop_cutting.set()
        w.stop()            # before its broker: a worker that cannot leave the group waits 20 s
        proxy.stop()
        embedded.stop(run_dir)


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
    assert wait_for(lambda: w.proc.poll() is None and confirmed_ago() < 3.0, 90,
                    what="confirmed again after the pause"), w.tail()
    w.wait_healthy(90)
    produce_events(cfg, second, progress=None)
    assert wait_for(lambda: not state_diffs(cfg, w, events, ids), 90, 0.25,
                    what="states equal to the batch path"), state_diffs(cfg, w, events, ids)
    c = published_vs_batch(cfg, events, tmp_path / "batch.jsonl")
    assert c.ok, (c.summary(), c.mismatched[:3])
    assert w.proc.poll() is None, "the worker was restarted, not rejoined"
