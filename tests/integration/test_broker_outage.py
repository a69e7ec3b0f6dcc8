"""Workers and broker outages, against the real embedded broker: a worker (re)started while the
broker is paused waits for it and becomes healthy when it comes back (the short chaos run once
lost a worker that way: its start-up topic check gave up at once, and the process exited)."""
from __future__ import annotations

import os
import signal
import time

import pytest

from deploy import broker as embedded
from tests.harness import profile_worker, write_config

pytestmark = pytest.mark.integration


def test_a_worker_started_during_a_broker_pause_waits_for_it(broker, workers, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", broker)
    pid = embedded.status(broker.run_dir).pid
    port = embedded.free_port()
    w = profile_worker(workers, cfg, 1, port, "worker")
    os.kill(pid, signal.SIGSTOP)
    try:
        w.start()
        time.sleep(20)      # the chaos run's pause, past the start-up admin client's 10 s timeout
        assert w.proc.poll() is None, f"the worker exited during the pause:\n{w.tail()}"
    finally:
        os.kill(pid, signal.SIGCONT)
    health = w.wait_healthy(120)
    assert health["status"] == "ok"
