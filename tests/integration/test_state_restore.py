"""A profile worker that lost its data dir restores every state from the state changelog, a
fetched run at a time (streams.faust_compat.changelog_restore): it counts as restored exactly
the records the changelog holds, and every user's state is the batch path's again. Queried
while it starts and restores, it answers each profile as published or 503 with Retry-After
(restoring, or no assignment yet), never a missing or an older profile."""
from __future__ import annotations

import shutil
import signal
import time

import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from streams.pipeline.topology import state_changelog_topic
from tests.harness import (
    caught_up,
    http_answer,
    http_json,
    latest_values,
    profile_worker,
    state_diffs,
    topic_size,
    wait_for,
    write_config,
)
from tools.data.sample import SampleSpec, write_sample

pytestmark = pytest.mark.integration


def _answer(url: str) -> tuple[int | None, dict, str | None]:
    """(status, body, Retry-After) of a GET; status None when nothing listens yet."""
    try:
        status, body, headers = http_answer(url, timeout=5)
    except OSError:
        return None, {}, None
    return status, body, headers.get("Retry-After")


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

    published = {int(k): v for k, v in
                 latest_values(cfg, cfg.kafka.topics.profile_updates).items()}
    asked = sorted(published)[::25]

    w.kill(signal.SIGKILL)
    shutil.rmtree(cfg.worker.data_dir)
    again = profile_worker(workers, cfg_path, 1, port, "w1-without-data").start()
    # asked while it starts and restores: the published profile, or 503, never another answer
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for uid in asked:
            status, body, retry = _answer(again.url(f"/profiles/{uid}"))
            kind = f"{status}" + (" restoring" if body.get("restoring") else "")
            seen[kind] = seen.get(kind, 0) + 1
            if status == 200:
                assert body["features"] == published[uid]["features"], (uid, body)
            elif status == 503:
                assert retry == "1", (body, retry)
                assert body.get("restoring") or "assignment" in body["error"], (uid, body)
            else:
                assert status is None, (uid, status, body)
        if seen.get("200", 0) >= 3 * len(asked):
            break
    print(f"answers while starting and after: {seen}")
    again.wait_healthy(120)
    assert wait_for(lambda: not state_diffs(cfg, again, sample / "events.jsonl", ids), 60,
                    interval=0.5, what="every state restored")
    stats = http_json(again.url("/stats"))[1]
    assert stats["changelog_restored"] == records, stats
    assert stats["counts"].get("applied", 0) == 0, stats["counts"]     # restored, not replayed
