"""Standby copies (worker.standby_replicas 1) that can be trusted (issue 27, item 2): two
workers, each keeping a standby copy of the other's partitions from the state changelog.
- Before the failure the standby holds exactly the records of the other worker's changelog
  partitions (counted by `changelog_restored`).
- After the other worker's SIGKILL the survivor takes its partitions over from the standby:
  no record more to restore, and every user's state is the batch path's.
- The stream goes on from there exact: states and published profiles equal the batch path's."""
from __future__ import annotations

import signal

import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from streams.pipeline.topology import state_changelog_topic
from tests.harness import (
    caught_up,
    http_json,
    owned_partitions,
    profile_worker,
    published_vs_batch,
    split_sample,
    state_diffs,
    topic_size,
    wait_for,
    write_config,
)
from tools.data.sample import SampleSpec

pytestmark = pytest.mark.integration
PARTITIONS = 4
# the broker's least session timeout: the survivor takes over 6 s after the kill, not 10
CLIENT = {"session_timeout_seconds": 6, "heartbeat_interval_seconds": 1}


def _restored(worker) -> int:
    return http_json(worker.url("/stats"))[1]["changelog_restored"]


def test_a_promoted_standby_holds_every_state_and_the_stream_goes_on_exact(
        broker, workers, tmp_path):
    sample, every, first, rest = split_sample(tmp_path, SampleSpec(users=300, days=30,
                                                                   activity=0.5, seed=9))
    cfg_path = write_config(tmp_path / "cfg.yaml", broker,
                            kafka={"partitions": PARTITIONS, "client": CLIENT},
                            worker={"standby_replicas": 1},
                            real_time_update={"batch_size": 500})
    cfg = load_config(cfg_path, env={})
    changelog = state_changelog_topic(cfg)
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    w1 = profile_worker(workers, cfg_path, 1, free_port(), "w1").start()
    w2 = profile_worker(workers, cfg_path, 2, free_port(), "w2").start()
    w1.wait_healthy()
    w2.wait_healthy()
    assert wait_for(lambda: len(owned_partitions(w1)) == len(owned_partitions(w2))
                    == PARTITIONS // 2, 60, what="two members with half the partitions each")
    produce_events(cfg, first, progress=None)
    caught_up(cfg)                  # every commit delivered, its changelog records included
    ids = list(range(1, 301))
    moving = owned_partitions(w1)
    # w2's standby copy of w1's partitions: every record of their changelog partitions
    held = topic_size(cfg, changelog, moving)
    assert held >= 50
    assert wait_for(lambda: _restored(w2) == held, 30, interval=0.25,
                    what="w2's standby caught up"), (_restored(w2), held)

    w1.kill(signal.SIGKILL)
    assert wait_for(lambda: owned_partitions(w2) == list(range(PARTITIONS)), 60, interval=0.25,
                    what="w2 owns every partition")
    w2.wait_healthy()
    assert _restored(w2) == held, "the promotion restored records the standby lacked"
    assert not state_diffs(cfg, w2, first, ids)

    produce_events(cfg, rest, progress=None)
    assert wait_for(lambda: not state_diffs(cfg, w2, every, ids), 60, interval=0.5,
                    what="every state equal to the batch path's"), \
        state_diffs(cfg, w2, every, ids)
    items = sample / "item_feat_dict.json"
    c = published_vs_batch(cfg, every, tmp_path / "batch.jsonl", items)
    assert c.ok, (c.summary(), c.mismatched[:2], c.missing[:5])
