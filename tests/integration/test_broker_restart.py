"""The embedded broker (Apache Kafka, log dirs on disk) restarting under running workers:
- SIGKILLed while events stream in, then started again from its log dirs: nothing is lost or
  applied twice, every state and latest profile equals the batch path, and the worker was never
  restarted;
- a controlled restart of the broker process, the same;
- its data lost (log dirs wiped, a new cluster id): the worker finds its RocksDB ahead of the now
  empty changelog (one warning per partition), drops it and rebuilds it, and afterwards holds
  exactly what the batch path gives for the events produced after the loss. A worker started
  against such a broker heals the same way. No manual step in either case."""
from __future__ import annotations

import threading
import time

import pytest

from deploy import broker as embedded
from deploy.broker import free_port
from deploy.clients import produce_events
from features.config import load_config
from tests.harness import (
    caught_up,
    http_json,
    profile_worker,
    published_vs_batch,
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


@pytest.mark.parametrize("fault", ["sigkill", "restart"])
def test_the_broker_goes_down_under_load_and_comes_back_from_its_log_dirs(
        fault, broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": PARTITIONS})
    cfg = load_config(cfg_path, env={})
    w = profile_worker(workers, cfg_path, 1, free_port(), "w").start()
    w.wait_healthy()
    now = int(time.time())
    ids = list(range(1, 301))
    events = write_events(tmp_path / "events.jsonl", ids, now - 4 * 86400, 20)   # 6,000
    cluster_id = embedded.BrokerFiles(broker.run_dir).cluster_id()
    produced: dict = {}

    def produce() -> None:
        try:
            produced["n"] = produce_events(cfg, events, rate=1500, progress=None)[0]
        except BaseException as e:          # shown by the assertion below
            produced["error"] = repr(e)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(1.5)                         # a third of the events sent
    if fault == "sigkill":
        assert embedded.kill(broker.run_dir) is not None
        time.sleep(1.0)
    else:
        assert embedded.stop(broker.run_dir)
    st, started = embedded.start(broker.run_dir, broker.port)
    assert started and st.cluster_id == cluster_id        # the same cluster, from disk
    producer.join(120)
    assert produced.get("n") == 6000, produced

    # (the worker may restart in place meanwhile: wait_for waits through it)
    assert wait_for(lambda: not state_diffs(cfg, w, events, ids), 120, 0.25,
                    what="states equal to the batch path"), state_diffs(cfg, w, events, ids)
    c = published_vs_batch(cfg, events, tmp_path / "batch.jsonl")
    assert c.ok, (c.summary(), c.mismatched[:3])
    assert w.proc.poll() is None, "the worker process exited (a restart in place keeps it)"
    assert not heal_warnings(w), "a broker that kept its data made the worker drop its state"


def test_worker_heals_after_the_broker_loses_its_data(broker, workers, tmp_path):
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": PARTITIONS})
    cfg = load_config(cfg_path, env={})
    w = profile_worker(workers, cfg_path, 1, free_port(), "w").start()
    w.wait_healthy()
    now = int(time.time())
    before = write_events(tmp_path / "before.jsonl", range(1, 61), now - 5 * 86400, 6)
    after = write_events(tmp_path / "after.jsonl", range(31, 91), now - 2 * 86400, 4)
    ids = list(range(1, 91))        # 1-30 only before, 31-60 both, 61-90 only after

    produce_events(cfg, before, progress=None)
    assert wait_for(lambda: not state_diffs(cfg, w, before, ids), 60, 0.25,
                    what="states equal to the batch path before the loss"), \
        state_diffs(cfg, w, before, ids)
    assert "ConsistencyError" not in w.log_path.read_text(errors="replace")
    # The states are served once written, before their changelog records are acknowledged and
    # the store's persisted changelog offsets move: the loss must come after that, or the
    # worker has no changelog offset to find ahead of the emptied log (the warnings below name
    # both signs). The group's commits reaching the end of user-events say it happened.
    caught_up(cfg)

    def lose_the_data() -> None:
        old = embedded.BrokerFiles(broker.run_dir).cluster_id()
        embedded.stop(broker.run_dir)
        embedded.wipe(broker.run_dir)
        st, _ = embedded.start(broker.run_dir, broker.port)    # empty: every topic is gone
        assert st.cluster_id not in (None, old)

    lose_the_data()
    assert wait_for(lambda: len(heal_warnings(w)) >= PARTITIONS, 90,
                    what="a heal warning per partition"), w.tail()
    w.wait_healthy(90)
    produce_events(cfg, after, progress=None)
    diffs = wait_for(lambda: not state_diffs(cfg, w, after, ids), 90, 0.25,
                     what="states equal to the batch path on the events after the loss")
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

    # a bare `profiles worker` started against a broker that lost its data heals the same way
    w.stop()
    lose_the_data()
    w2 = profile_worker(workers, cfg_path, 1, free_port(), "w-again").start()
    w2.wait_healthy(90)
    assert len(heal_warnings(w2)) == PARTITIONS, w2.tail()
    _, states = http_json(w2.url("/states?ids=" + ",".join(map(str, ids))))
    assert set(states.values()) == {None}                   # nothing left of the old log
