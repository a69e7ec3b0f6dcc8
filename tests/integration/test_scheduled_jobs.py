"""Scheduled runs against real workers: the hourly job as stream time moves on, the weekly
rebuild finding and repairing a corrupted state, and a daily backup restored after the data dir
is lost."""
from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from features.config import load_config
from features.encoding import decode, encode
from streams.state.rocksdb import open_store
from tests.harness import (
    ROOT,
    caught_up,
    http_json,
    latest_values,
    profile_worker,
    topic_values,
    wait_delivered,
    wait_for,
    write_config,
)
from tools.data.sample import END_TS, SampleSpec, write_sample
from tools.verify import batch_profiles, compare

pytestmark = pytest.mark.integration
DAY = 86400


def run_cli(cfg_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "deploy", "--config", str(cfg_path), *args],
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    print(f"$ profiles {' '.join(args)}  (exit {r.returncode})\n{r.stdout}{r.stderr}")
    return r


def processed(workers_, n: int) -> bool:
    return sum(http_json(w.url("/stats"))[1]["counts"].get("events_in", 0)
               for w in workers_) >= n


def clock_events(cfg, ts: int, item_id: int) -> list[dict]:
    """One event at `ts` for a fresh user on every partition: moves each partition's stream
    time to ts without touching the users under test."""
    n = cfg.kafka.partitions
    partitioner = DefaultPartitioner()
    out, seen, uid = [], set(), 90_000_000
    while len(seen) < n:
        p = partitioner(str(uid).encode(), list(range(n)), list(range(n)))
        if p not in seen:
            seen.add(p)
            out.append({"user_id": uid, "item_id": item_id, "timestamp": ts, "action_type": 0,
                        "event_id": f"clock-{uid}"})
        uid += 1
    return out


def append_events(src: Path, extra: list[dict], dest: Path) -> Path:
    dest.write_bytes(src.read_bytes() + b"".join(orjson.dumps(e) + b"\n" for e in extra))
    return dest


@pytest.fixture(scope="module")
def sample_60d(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample60")
    info = write_sample(SampleSpec(users=400, days=60, activity=0.5, seed=11), d)
    return d, info


def test_hourly_job_follows_stream_time_exactly_as_batch_as_of(broker, workers, tmp_path,
                                                              sample_60d):
    sample, info = sample_60d
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 4})
    cfg = load_config(cfg_path, env={})
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    w = [profile_worker(workers, cfg_path, i, free_port(), f"w{i}").start() for i in (1, 2)]
    for x in w:
        x.wait_healthy()
    n, _ = produce_events(cfg, sample / "events.jsonl", progress=None)
    assert wait_for(lambda: processed(w, n), 180, what="events processed")

    # The stream stops for these users; time moves on through other users' events.
    T = END_TS + 9 * DAY + 3600
    clock = clock_events(cfg, T, item_id=1)
    (tmp_path / "clock.jsonl").write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in clock))
    produce_events(cfg, tmp_path / "clock.jsonl", progress=None)
    assert wait_for(lambda: processed(w, n + len(clock)), 60, what="clock events processed")
    wait_delivered(cfg, w)  # every record of those events in profile-updates
    before = {int(k): v for k, v in latest_values(cfg, cfg.kafka.topics.profile_updates).items()}

    # every state-changing endpoint refuses a request without the bearer token
    for name in ("hourly", "daily", "weekly"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            req = urllib.request.Request(w[0].url(f"/jobs/{name}"), data=b"", method="POST",
                                         headers=headers)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == 401
    assert http_json(w[0].url("/jobs"))[1]["last"] == {}          # nothing ran

    r = run_cli(cfg_path, "job", "hourly", "--url", w[0].url(""), "--url", w[1].url(""))
    assert r.returncode == 0

    everything = append_events(sample / "events.jsonl", clock, tmp_path / "all.jsonl")
    expected = batch_profiles(cfg, sample / "item_feat_dict.json", everything,
                              tmp_path / "batch.jsonl", as_of=T)
    wait_delivered(cfg, w)
    after = {int(k): v for k, v in latest_values(cfg, cfg.kafka.topics.profile_updates).items()}
    c = compare(after, expected)
    print(f"hourly at stream time {T}: {c.summary()}")
    assert c.ok, (c.summary(), c.mismatched[:3], c.missing[:5])

    # It did real work: levels fell and interests were dropped, each user published once.
    lowered = [u for u in before if after[u]["activity_level"] < before[u]["activity_level"]]
    dropped = [u for u in before if len(after[u]["interest_tags"]) <
               len(before[u]["interest_tags"])]
    hourly = Counter(r["user_id"] for r in topic_values(cfg, cfg.kafka.topics.profile_updates)
                     if r["trigger"] == "hourly")
    print(f"hourly published {sum(hourly.values())} profiles: {len(lowered)} activity levels "
          f"lowered, {len(dropped)} users lost interest tags")
    assert lowered and dropped
    assert max(hourly.values()) == 1, "a user was published twice by one run"
    assert all(after[u]["trigger"] == "hourly" and after[u]["as_of"] == T for u in hourly)

    # A second run at the same stream time finds nothing due.
    r = run_cli(cfg_path, "job", "hourly", "--url", w[0].url(""), "--url", w[1].url(""))
    assert r.returncode == 0 and "published 0," in r.stdout


def _state_dbs(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("**/user-state-*.db"))


def corrupt_one_user(data_dir: Path, served: dict[int, dict], tz: int = 0) -> int:
    """In the stopped worker's RocksDB, give a user with activity level < 3 whose profile's own
    day holds events 400 extra clicks that day; returns the user id."""
    for path in _state_dbs(data_dir):
        db = open_store(path)
        try:
            for uid in sorted(served):
                rec = served[uid]
                blob = db.get(str(uid).encode())
                if blob is None or rec["activity_level"] == 3:
                    continue
                state = decode(blob, tz)
                day = (rec["as_of"] + tz) // DAY
                if day in state.days:
                    state.days[day].actions[1] = state.days[day].actions.get(1, 0) + 400
                    db.put(str(uid).encode(), encode(state, tz))
                    return uid
        finally:
            db.close()
    raise AssertionError("no user to corrupt")


def test_weekly_repairs_corruption_and_backup_restores(broker, workers, tmp_path, sample_60d):
    sample, info = sample_60d
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 4})
    cfg = load_config(cfg_path, env={})
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    port = free_port()
    w = profile_worker(workers, cfg_path, 1, port, "w1").start()
    w.wait_healthy()
    events = sample / "events.jsonl"
    lines = events.read_bytes().splitlines(keepends=True)
    first, rest = tmp_path / "first.jsonl", tmp_path / "rest.jsonl"
    half = len(lines) * 2 // 3
    first.write_bytes(b"".join(lines[:half]))
    rest.write_bytes(b"".join(lines[half:]))
    n1, _ = produce_events(cfg, first, progress=None)
    assert wait_for(lambda: processed([w], n1), 180, what="first part processed")

    # daily: a backup; weekly on a healthy system: no drift
    r = run_cli(cfg_path, "job", "daily", "--url", w.url(""))
    assert r.returncode == 0 and "backup " in r.stdout
    r = run_cli(cfg_path, "job", "weekly", "--url", w.url(""))
    assert r.returncode == 0 and "drift 0 users" in r.stdout

    # the rest of the events arrive after the backup
    n2, _ = produce_events(cfg, rest, progress=None)
    assert wait_for(lambda: processed([w], n1 + n2), 180, what="rest processed")
    expected = batch_profiles(cfg, sample / "item_feat_dict.json", events, tmp_path / "b.jsonl")

    # corrupt one user's state while the worker is down: a quiet user suddenly very active
    served = served_profiles(w, sorted(expected))
    w.stop()
    victim = corrupt_one_user(cfg.data_dir / "instance-1", served)
    w = profile_worker(workers, cfg_path, 1, port, "w1-corrupted").start()
    w.wait_healthy()
    # one more event of the victim: the stream now publishes a profile built on the bad state
    extra = [{"user_id": victim, "item_id": 1, "timestamp": served[victim]["as_of"],
              "action_type": 0, "event_id": "after-corruption"}]
    everything = append_events(events, extra, tmp_path / "all.jsonl")
    (tmp_path / "extra.jsonl").write_bytes(orjson.dumps(extra[0]) + b"\n")
    produce_events(cfg, tmp_path / "extra.jsonl", progress=None)
    def newer_record():
        rec = latest_values(cfg, cfg.kafka.topics.profile_updates)[str(victim).encode()]
        return rec if rec["version"] > served[victim]["version"] else None
    wrong = wait_for(newer_record, 30, what="the victim's next record")
    assert wrong["activity_level"] == 3, wrong

    r = run_cli(cfg_path, "job", "weekly", "--url", w.url(""))
    assert r.returncode == 2, "the weekly run must report the drift"
    report = http_json(w.url("/jobs"))[1]["last"]["weekly"]
    drift = report["totals"]["drift"]
    print(f"weekly drift: {drift}")
    assert drift["users"] == 1 and drift["corrected"] == 1
    assert drift["examples"][0]["user_id"] == victim and drift["features"]["108"] == 1
    # The correction is published as of the run's clock (the stream time of the user's
    # partition), exactly as the batch path computes it as of then.
    n_parts = cfg.kafka.partitions
    part = DefaultPartitioner()(str(victim).encode(), list(range(n_parts)), list(range(n_parts)))
    clock = next(p["stream_time"] for p in report["partitions"] if p["partition"] == part)
    want = batch_profiles(cfg, sample / "item_feat_dict.json", everything,
                          tmp_path / "at.jsonl", as_of=clock)[victim]
    caught_up(cfg)          # the stream's records delivered (the job's were, before it answered)
    published = latest_values(cfg, cfg.kafka.topics.profile_updates)[str(victim).encode()]
    fixed = http_json(w.url(f"/profiles/{victim}"))[1]
    assert published["trigger"] == "weekly" and published["as_of"] == clock
    assert published["version"] == wrong["version"] + 1
    assert fixed["features"] == published["features"] == want["features"]
    r = run_cli(cfg_path, "job", "weekly", "--url", w.url(""))
    assert r.returncode == 0 and "drift 0 users" in r.stdout

    # backup, lose the data dir, restore: the worker catches up from the changelog
    before = served_profiles(w, sorted(expected))
    w.stop()
    listing = run_cli(cfg_path, "backup", "list")
    assert listing.returncode == 0 and "instance 1" in listing.stdout
    shutil.rmtree(cfg.data_dir / "instance-1")
    r = run_cli(cfg_path, "backup", "restore", "--instance-id", "1")
    assert r.returncode == 0 and "restored" in r.stdout
    w = profile_worker(workers, cfg_path, 1, port, "w1-restored").start()
    w.wait_healthy(120)
    after = served_profiles(w, sorted(expected))
    c = compare(after, before)
    print(f"after restore, against what was served before the data dir was lost: {c.summary()}")
    assert c.ok, (c.summary(), c.mismatched[:2], c.missing[:5])
    assert all(after[u]["version"] == before[u]["version"] for u in before)


def served_profiles(w, ids: list[int]) -> dict[int, dict]:
    out = {}
    for i in range(0, len(ids), 200):
        chunk = ids[i:i + 200]
        status, body = http_json(w.url("/profiles?ids=" + ",".join(map(str, chunk))), 20)
        assert status == 200, body
        out.update({int(k): v for k, v in body["profiles"].items() if v is not None})
    return out
