"""A time-ordered sample served by a live worker, and the training rows of what it published:
the shared steps of the tests that hold the stream equal to the training sets
(tests/integration/test_training_parity.py, test_feature_111.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

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
from tests.offline_data import write_jsonl
from tools.data.sample import SampleSpec, write_sample

SERVED = ("features", "interest_tags", "behavior_preferences", "activity_level", "user_type",
          "confidence")


def time_ordered_sample(folder: Path) -> tuple[int, int]:
    """The sample's valid events sorted by time, one event per (user, second); (events, users)."""
    write_sample(SampleSpec(users=60, days=12, items=300, bad_rate=0), folder)
    events = []
    for line in (folder / "events.jsonl").read_bytes().splitlines():
        obj = orjson.loads(line)
        events.append(obj)
    events.sort(key=lambda e: e["timestamp"])
    seen, kept = set(), []
    for e in events:
        if (e["user_id"], e["timestamp"]) not in seen:
            seen.add((e["user_id"], e["timestamp"]))
            kept.append(e)
    write_jsonl(folder / "events.jsonl", kept)
    return len(kept), len({e["user_id"] for e in kept})


def serve_time_ordered_sample(broker: Any, workers: Any, tmp_path: Path, **sections: Any
                              ) -> tuple[Any, Path, Path, list[dict], int]:
    """One worker (2 partitions, a commit per batch of 100: the events arrive as one backlog,
    under which write-back would commit once a second and publish fewer intermediate profiles)
    takes the sample; returns (config, items, events, every profile-updates record, users)."""
    sample = tmp_path / "sample"
    n_events, n_users = time_ordered_sample(sample)
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2},
                            real_time_update={"batch_size": 100, "commit_interval": 0},
                            **sections)
    cfg = load_config(cfg_path, env={})
    items, events = sample / "item_feat_dict.json", sample / "events.jsonl"
    load_items(cfg, items, progress=None)
    w = profile_worker(workers, cfg_path, 1, free_port(), "w").start()
    w.wait_healthy()
    produce_events(cfg, events, progress=None)

    def all_published() -> bool:
        done = http_json(w.url("/stats"))[1]["counts"].get("events_in", 0) >= n_events
        return done and len(latest_values(cfg, cfg.kafka.topics.profile_updates)) == n_users
    assert wait_for(all_published, timeout=120, interval=0.25), "the worker did not catch up"
    wait_delivered(cfg, [w])  # every record the worker made is in profile-updates
    return cfg, items, events, topic_values(cfg, cfg.kafka.topics.profile_updates), n_users


def training_mismatches(cfg: Any, items: Path, events: Path, published: list[dict],
                        tmp_path: Path) -> list[tuple]:
    """The training set for (user, as_of) of every published record, against the record: the
    served fields that differ, record by record."""
    labels = write_jsonl(tmp_path / "labels.jsonl",
                         [{"user_id": r["user_id"], "ts": r["as_of"], "version": r["version"]}
                          for r in published])
    out = tmp_path / "training.jsonl"
    local.run_training_set(cfg, items, events, labels, out, workers=1, progress_stream=None)
    rows = read_records(out)
    assert len(rows) == len(published)
    return [(r["user_id"], r["version"], {k: (r[k], p[k]) for k in SERVED if r[k] != p[k]})
            for r, p in zip(rows, published) if any(r[k] != p[k] for k in SERVED)]
