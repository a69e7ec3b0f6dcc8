"""A profile worker that lost its data dir restores every state from the state changelog, a
fetched run at a time (streams.faust_compat.changelog_restore): it counts as restored exactly
the records the changelog holds, and every user's state is the batch path's again."""
from __future__ import annotations

import shutil
import signal

import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from streams.pipeline.topology import state_changelog_topic
from tests.harness import (
    caught_up,
    http_json,
    profile_worker,
    state_diffs,
    topic_size,
    wait_for,
    write_config,
)
from tools.data.sample import SampleSpec, write_sample

pytestmark = pytest.mark.integration


def test_a_worker_without_its_data_dir_restores_every_state_from_the_changelog(
        broker, workers, tmp_path):
    sample = tmp_path / "sample"
    info = write_sample(SampleSpec(users=300, days=30, activity=0.5, seed=5), sample)
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 4},
                            real_time_update={"batch_size": 500})
    cfg = load_config(cfg_path, env={})
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    port = free_port()
    w = profile_worker(workers, cfg_path, 1, port, "w1").start()
    w.wait_healthy()
    assert produce_events(cfg, sample / "events.jsonl", progress=None)[0] == info["events"]
    caught_up(cfg)                  # every commit delivered, its changelog records included
    ids = list(range(1, 301))
    assert not state_diffs(cfg, w, sample / "events.jsonl", ids)
    records = topic_size(cfg, state_changelog_topic(cfg))
    assert records >= 200           # a state per active user at least: runs of many records

    w.kill(signal.SIGKILL)
    shutil.rmtree(cfg.worker.data_dir)
    again = profile_worker(workers, cfg_path, 1, port, "w1-without-data").start()
    again.wait_healthy(120)
    assert wait_for(lambda: not state_diffs(cfg, again, sample / "events.jsonl", ids), 60,
                    interval=0.5, what="every state restored")
    stats = http_json(again.url("/stats"))[1]
    assert stats["changelog_restored"] == records, stats
    assert stats["counts"].get("applied", 0) == 0, stats["counts"]     # restored, not replayed
