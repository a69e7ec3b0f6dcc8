"""Feature 111, added as docs/EXTENDING.md says (a config entry, one computation module, the
F·10^7 + k mapping), on the running system: every profile-updates record a worker publishes
carries it, the training-set row for (that user, that record's as_of) has the same arrays,
and each user's latest record equals `profiles batch` over the same events."""
from __future__ import annotations

import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from offline import local
from offline.formats import read_records
from tests.harness import (
    http_json,
    latest_values,
    profile_worker,
    topic_values,
    wait_delivered,
    wait_for,
    write_config,
)
from tests.integration.test_training_parity import SERVED, time_ordered_sample
from tests.offline_data import write_jsonl
from tools.verify import batch_profiles

pytestmark = pytest.mark.integration

FEATURE_111 = {"extractor": "features.extras.session_frequency:session_frequency",
               "max_values": 1, "params": {"edges": [0, 2, 4]}, "windows": [7]}


def test_feature_111_stream_equals_batch_equals_training_set(broker, workers, tmp_path):
    sample = tmp_path / "sample"
    n_events, n_users = time_ordered_sample(sample)
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2},
                            real_time_update={"batch_size": 100, "commit_interval": 0},
                            extra_features={"111": FEATURE_111})
    cfg = load_config(cfg_path, env={})
    items, events = sample / "item_feat_dict.json", sample / "events.jsonl"
    load_items(cfg, items, progress=None)
    w = profile_worker(workers, cfg_path, 1, free_port(), "w").start()
    w.wait_healthy()
    produce_events(cfg, events, progress=None)

    def all_published():
        done = http_json(w.url("/stats"))[1]["counts"].get("events_in", 0) >= n_events
        return done and len(latest_values(cfg, cfg.kafka.topics.profile_updates)) == n_users
    assert wait_for(all_published, timeout=120, interval=0.25), "the worker did not catch up"
    wait_delivered(cfg, [w])
    published = topic_values(cfg, cfg.kafka.topics.profile_updates)
    assert published and all(set(r["features"]) == {"106", "107", "108", "110", "111"}
                              for r in published)
    # the feature varies over the stream: more than one bucket is published
    values = {v for r in published for v in r["features"]["111"]}
    assert len(values) > 1 and all(1110000000 <= v <= 1110000003 for v in values), values

    # stream = training set, record by record
    labels = write_jsonl(tmp_path / "labels.jsonl",
                         [{"user_id": r["user_id"], "ts": r["as_of"], "version": r["version"]}
                          for r in published])
    out = tmp_path / "training.jsonl"
    local.run_training_set(cfg, items, events, labels, out, workers=1, progress_stream=None)
    rows = read_records(out)
    assert len(rows) == len(published)
    mismatched = [(r["user_id"], r["version"], {k: (r[k], p[k]) for k in SERVED if r[k] != p[k]})
                  for r, p in zip(rows, published) if any(r[k] != p[k] for k in SERVED)]
    assert not mismatched, mismatched[:5]

    # stream = batch: each user's latest record
    latest = {r["user_id"]: r for r in published}       # (in offset order: the last wins)
    batch = batch_profiles(cfg, items, events, tmp_path / "batch.jsonl")
    assert set(batch) == set(latest)
    differ = [(uid, batch[uid]["features"], latest[uid]["features"]) for uid in latest
              if batch[uid]["features"] != latest[uid]["features"]]
    assert not differ, differ[:5]
