"""Idle users' days closed by stream time (issue 15), against a real worker: users go quiet and
stream time moves on; the hourly run publishes each user's last day's `profile-aggregates`
record once, equal to the record the stream publishes when a later event closes the same day
(a twin of each user, with the same events, gets that later event); a second run publishes
none, and the user's own next event does not publish the day again."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from tests.harness import profile_worker, topic_values, wait_delivered, wait_for, write_config
from tests.integration.test_scheduled_jobs import DAY, clock_events, processed, run_cli
from tools.data.sample import END_TS, SampleSpec, write_sample

pytestmark = pytest.mark.integration
TWIN = 10_000_000           # user u's twin: the same events under user id u + TWIN


def with_twins(src: Path, dest: Path) -> tuple[int, set[int]]:
    """Each event of the sample followed by its twin's; (lines written, the users)."""
    out, users = [], set()
    for line in src.read_bytes().splitlines():
        out.append(line)
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("user_id"), int) and ev["user_id"] > 0:
            users.add(ev["user_id"])
            out.append(orjson.dumps({**ev, "user_id": ev["user_id"] + TWIN}))
    dest.write_bytes(b"\n".join(out) + b"\n")
    return len(out), users


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def aggregates(cfg, w) -> list[dict]:
    """Every profile-aggregates record, once every record worker `w` made is in its topic."""
    wait_delivered(cfg, [w])
    return topic_values(cfg, cfg.kafka.topics.profile_aggregates)


def test_hourly_closes_quiet_users_days_once_as_the_stream_would(broker, workers, tmp_path):
    sample = tmp_path / "sample"
    write_sample(SampleSpec(users=30, days=12, items=300, seed=5), sample)
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 4})
    cfg = load_config(cfg_path, env={})
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    w = profile_worker(workers, cfg_path, 1, free_port(), "w1").start()
    w.wait_healthy()
    _, users = with_twins(sample / "events.jsonl", tmp_path / "events.jsonl")
    n, _ = produce_events(cfg, tmp_path / "events.jsonl", progress=None)
    assert wait_for(lambda: processed([w], n), 120, what="events processed")

    # Every twin's next event closes its last day in the stream; the originals go quiet, and
    # stream time moves a day past the sample on every partition.
    T = END_TS + DAY + 3600
    nxt = [{"user_id": u + TWIN, "item_id": 1, "timestamp": T, "action_type": 0,
            "event_id": f"next-{u}"} for u in sorted(users)] + clock_events(cfg, T, item_id=1)
    produce_events(cfg, write_events(tmp_path / "next.jsonl", nxt), progress=None)
    assert wait_for(lambda: processed([w], n + len(nxt)), 60, what="next events processed")
    by_stream = {r["user_id"] - TWIN: r for r in aggregates(cfg, w) if r["user_id"] > TWIN}
    assert set(by_stream) == users
    last_day = {u: r["day"] for u, r in by_stream.items()}

    r = run_cli(cfg_path, "job", "hourly", "--url", w.url(""))
    assert r.returncode == 0 and f"closed_days {len(users)}," in r.stdout
    recs = aggregates(cfg, w)
    by_run = {r["user_id"]: r for r in recs if r["user_id"] in users}
    assert set(by_run) == users
    for u in sorted(users):
        got, want = by_run[u], by_stream[u]
        assert got["day"] == last_day[u] and got["as_of"] == want["as_of"]
        assert got["windows"] == want["windows"], (u, got, want)
    assert sum(rec["windows"]["30"]["actions"] for rec in by_run.values()) > 0
    # once per (user, day): the twins' days, closed by the stream, were not closed again
    pairs = Counter((rec["user_id"], rec["day"]) for rec in recs)
    assert max(pairs.values()) == 1, [p for p, k in pairs.items() if k > 1][:5]

    # a second run at the same stream time: nothing to close
    r = run_cli(cfg_path, "job", "hourly", "--url", w.url(""))
    assert r.returncode == 0 and "closed_days 0," in r.stdout
    # the originals' next events (a later day) do not publish the closed day again
    later = [{"user_id": u, "item_id": 2, "timestamp": T + 60, "action_type": 1,
              "event_id": f"later-{u}"} for u in sorted(users)]
    produce_events(cfg, write_events(tmp_path / "later.jsonl", later), progress=None)
    assert wait_for(lambda: processed([w], n + len(nxt) + len(later)), 60,
                    what="later events processed")
    after = Counter((rec["user_id"], rec["day"]) for rec in aggregates(cfg, w))
    assert after == pairs, [p for p, k in after.items() if k > 1][:5]
