"""Restarts that heal: the embedded broker (memory only) restarts under a running worker with
local state. The worker rejoins by itself, finds its RocksDB ahead of the now empty changelog
(one warning per partition), drops it and rebuilds it, and afterwards holds exactly what the
batch path gives for the events produced after the restart (the events from before are gone
with the broker; a kept state would also have skipped the new events at offsets it had seen).
A worker started against a restarted broker heals the same way."""
from __future__ import annotations

import time

import pytest

from deploy import broker as embedded
from deploy.broker import free_port
from deploy.clients import produce_events
from features.config import load_config
from tests.harness import (
    http_json,
    profile_worker,
    state_diffs,
    wait_for,
    write_config,
    write_events,
)

pytestmark = pytest.mark.integration
PARTITIONS = 2
HEALED = "local state is ahead of its log"


def heal_warnings(worker) -> list[str]:
    return [line for line in worker.log_path.read_text(errors="replace").splitlines()
            if HEALED in line]


def test_worker_heals_after_the_broker_restarts_under_it(broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": PARTITIONS})
    cfg = load_config(cfg_path, env={})
    w = profile_worker(workers, cfg_path, 1, free_port(), "w").start()
    w.wait_healthy()
    now = int(time.time())
    before = write_events(tmp_path / "before.jsonl", range(1, 61), now - 5 * 86400, 6)
    after = write_events(tmp_path / "after.jsonl", range(31, 91), now - 2 * 86400, 4)
    ids = list(range(1, 91))        # 1-30 only before, 31-60 both, 61-90 only after

    produce_events(cfg, before, progress=None)
    assert wait_for(lambda: not state_diffs(cfg, w, before, ids), 60, 1,
                    what="states equal to the batch path before the restart"), \
        state_diffs(cfg, w, before, ids)
    assert "ConsistencyError" not in w.log_path.read_text(errors="replace")

    embedded.stop(broker.run_dir)
    embedded.start(broker.run_dir, broker.port)       # empty: every topic is gone

    assert wait_for(lambda: len(heal_warnings(w)) >= PARTITIONS, 60, 0.5,
                    what="a heal warning per partition"), w.tail()
    w.wait_healthy(60)
    produce_events(cfg, after, progress=None)
    diffs = wait_for(lambda: not state_diffs(cfg, w, after, ids), 60, 1,
                     what="states equal to the batch path on the events after the restart")
    assert diffs, state_diffs(cfg, w, after, ids)
    assert w.proc.poll() is None, "the worker was restarted, not healed"
    warnings = heal_warnings(w)
    print("\n" + "\n".join(line.split("] ", 3)[-1] for line in warnings))
    assert len(warnings) == PARTITIONS
    # both signs: the changelog ends before the state's offset, and the user-events offsets the
    # state says it processed are gone
    assert all("the changelog ends at -1" in line and "the source ends at -1" in line
               for line in warnings), warnings
    assert sorted(line.split("partition ")[1].split(" ")[0] for line in warnings) == \
        [str(p) for p in range(PARTITIONS)]
    assert "ConsistencyError" not in w.log_path.read_text(errors="replace")
    status, body = http_json(w.url("/profiles?ids=" + ",".join(map(str, range(1, 31)))))
    assert status == 200 and len(body["missing"]) == 30     # only in the events that are gone

    # a bare `profiles worker` started against a restarted broker heals the same way
    w.stop()
    embedded.stop(broker.run_dir)
    embedded.start(broker.run_dir, broker.port)
    w2 = profile_worker(workers, cfg_path, 1, free_port(), "w-again").start()
    w2.wait_healthy(60)
    assert len(heal_warnings(w2)) == PARTITIONS, w2.tail()
    _, states = http_json(w2.url("/states?ids=" + ",".join(map(str, ids))))
    assert set(states.values()) == {None}                   # nothing left of the old log
