"""Hold-back of publishes end to end (real_time_update.update_interval): the same stream through
two workers, one SIGKILLed mid-stream, once with update_interval 0 and once with 2 s (while
users are held). With 2 s the latest profile-updates record of every user equals the batch
path, no user has two records less than 2 s apart, and far fewer records go out."""
from __future__ import annotations

import re
import signal
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest

from deploy.broker import free_port
from deploy.clients import load_items, produce_events, read_all
from features.config import ProfileConfig, load_config
from tests.harness import profile_worker, topic_values, wait_for, write_config
from tools.data.sample import SampleSpec, write_sample
from tools.verify import batch_profiles, compare

pytestmark = pytest.mark.integration

INTERVAL = 2.0
RATE = 10_000               # events/s produced: the stream lasts about 4 s
KILL_AFTER = 1.5            # seconds into the stream
# Both runs commit at least every 0.25 s. With update_interval 0 a user's records are one per
# commit that changed it, and a worker that never catches up commits only every commit_interval
# (1 s by default): on a slow machine that is too close to the 2 s hold-back for "far fewer"
# to say anything (CI: 1,206 against 892 records). 0.25 s keeps the comparison about the
# hold-back, not about how often the machine caught up.
COMMIT_INTERVAL = 0.25
# Worker 1 takes the SIGKILLed worker's partitions once the broker has expired its session: the
# broker's least (group.min.session.timeout.ms, 6 s) instead of the default 10 s, as
# test_publisher_thaw has it; what is held and published does not depend on when that comes.
CLIENT = {"session_timeout_seconds": 6, "heartbeat_interval_seconds": 1}
# at_least_once: the interval-0 run publishes one record per commit that changed a user, and
# under exactly_once_v2 a commit also waits for its transaction to end, so a worker that never
# catches up makes fewer commits: its record count then says how fast the machine commits, not
# what the hold-back saves (one run each: exactly_once_v2 1,179 against 813 new versions, over
# the 0.6 asked; at_least_once 1,423 against 766). The hold-back is the same code under both.
GUARANTEE = "at_least_once"


def all_records(cfg: ProfileConfig, topic: str) -> list[dict]:
    """Every record of the topic now, in order per partition (a user's records are in one)."""
    return topic_values(cfg, topic)


def all_records_until_idle(cfg: ProfileConfig, topic: str) -> list[dict]:
    """Every record of the topic, read until none came for 2 s: the records counted include
    any a held user's interval still sends after the latest ones matched the batch path."""
    return [v for _, v in read_all(cfg, topic, idle_timeout=2.0)]


def held_users(url: str) -> float:
    """profiles_held_users from a worker's /metrics (0 when it does not answer)."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    m = re.search(r"^profiles_held_users (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def run_stream(workers, broker, folder: Path, sample: Path, interval: float) -> dict:
    """Two workers, the sample produced at RATE, worker 2 SIGKILLed KILL_AFTER seconds in (with
    a hold-back: once it holds users) and not restarted: worker 1 takes its partitions, and
    the users held in their states."""
    tag = f"s{int(interval)}"
    folder.mkdir(parents=True, exist_ok=True)
    cfg_path = write_config(
        folder / "cfg.yaml", broker, kafka={
            "partitions": 4, "client": CLIENT, "processing_guarantee": GUARANTEE, "topics": {
            "user_events": f"{tag}-events", "profile_updates": f"{tag}-updates",
            "profile_aggregates": f"{tag}-aggregates", "dlq": f"{tag}-dlq",
            "alerts": f"{tag}-alerts", "item_features": "item-features"}},
        worker={"app_id": f"profiles-{tag}", "data_dir": str(folder / "data")},
        real_time_update={"batch_size": 500, "update_interval": interval,
                          "commit_interval": COMMIT_INTERVAL})
    cfg = load_config(cfg_path, env={})
    load_items(cfg, sample / "item_feat_dict.json", progress=None)
    w1 = profile_worker(workers, cfg_path, 1, free_port(), f"{tag}-w1").start()
    w2 = profile_worker(workers, cfg_path, 2, free_port(), f"{tag}-w2").start()
    w1.wait_healthy()
    w2.wait_healthy()
    done = threading.Event()

    def produce():
        produce_events(cfg, sample / "events.jsonl", rate=RATE, progress=None)
        done.set()

    threading.Thread(target=produce, daemon=True).start()
    time.sleep(KILL_AFTER)
    held_at_kill = 0.0
    if interval > 0:
        held_at_kill = wait_for(lambda: held_users(w2.url()), timeout=5, interval=0.05)
        assert held_at_kill, "worker 2 held no user while the stream ran"
    assert not done.is_set(), "the stream ended before the kill"
    w2.kill(signal.SIGKILL)
    assert done.wait(90)
    return {"cfg": cfg, "w1": w1, "held_at_kill": held_at_kill}


def test_hold_back_publishes_once_per_interval_and_ends_at_the_batch_path(
        broker, workers, tmp_path):
    sample = tmp_path / "sample"
    info = write_sample(SampleSpec(users=300, days=30, activity=2.0), sample)
    expected = batch_profiles(load_config(write_config(tmp_path / "batch.yaml", broker), env={}),
                              sample / "item_feat_dict.json", sample / "events.jsonl",
                              tmp_path / "batch" / "profiles.jsonl")
    counts, timings = {}, {}
    for interval in (0.0, INTERVAL):
        t0 = time.monotonic()
        run = run_stream(workers, broker, tmp_path / f"s{int(interval)}", sample, interval)
        cfg = run["cfg"]

        def converged(read=all_records):
            recs = read(cfg, cfg.kafka.topics.profile_updates)
            latest = {}
            for r in recs:
                latest[r["user_id"]] = r
            return (recs, latest) if compare(latest, expected).ok else None

        t1 = time.monotonic()
        # polled on what the topic holds now; once that matches, a read until idle must too
        got = wait_for(lambda: converged() and converged(all_records_until_idle), timeout=60,
                       interval=0.25)
        if not got:
            recs = all_records(cfg, cfg.kafka.topics.profile_updates)
            latest = {r["user_id"]: r for r in recs}
            c = compare(latest, expected)
            raise AssertionError((interval, c.summary(), c.mismatched[:3], c.missing[:10]))
        recs, _ = got
        counts[interval] = recs
        run["w1"].stop()
        timings[interval] = (round(t1 - t0, 1), round(time.monotonic() - t1, 1))

    n0, n2 = len(counts[0.0]), len(counts[INTERVAL])
    _, _, resent0 = gaps_and_resends(counts[0.0])
    gaps, new_close, resent2 = gaps_and_resends(counts[INTERVAL])
    print(f"\n{info['events']} events of {len(expected)} users; records published: "
          f"update_interval 0: {n0} ({n0 / len(expected):.1f} per user), "
          f"update_interval {INTERVAL:g} s: {n2} ({n2 / len(expected):.1f} per user); "
          f"held users at the SIGKILL: {run['held_at_kill']:g}; smallest gap before a new "
          f"version: {min(gaps):.3f} s; versions sent again after the SIGKILL (the same record, "
          f"another one): {resent0} (interval 0), {resent2} (interval {INTERVAL:g} s); "
          f"phases: {timings}")
    # a new version never goes out within the interval of the user's previous record
    assert not new_close, new_close[:3]
    assert min(gaps) >= INTERVAL - 0.001
    # far fewer records; fewer still counting new versions only (the records sent again after
    # the SIGKILL depend on where it fell: 14-214 of them in five runs)
    assert n2 < 0.7 * n0
    assert n2 - sum(resent2) < 0.6 * (n0 - sum(resent0))


def gaps_and_resends(records: list[dict]) -> tuple[list[float], list, list[int]]:
    """Per user, in publish order: the gaps before each new version (one above every version
    before it) from the record before it, the new versions sent within INTERVAL of the record
    before, and the records whose version was sent before (after the SIGKILL the partition's
    next owner sends the current version again for users whose events come again, in case the
    crash lost the record; and publishes again what the SIGKILLed worker had published without
    its state write: FEATURES.md §7's versions then repeat, with update_interval 0 as well)."""
    by_user = defaultdict(list)
    for r in records:
        by_user[r["user_id"]].append(r)
    gaps, close, resent = [], [], [0, 0]    # the same record again, another one
    for recs in by_user.values():
        top = recs[0]["version"]
        seen = {top: recs[0]["features"]}
        for a, b in zip(recs, recs[1:]):
            if b["version"] <= top:
                resent[seen.get(b["version"]) != b["features"]] += 1
                continue
            seen[b["version"]] = b["features"]
            assert b["version"] == top + 1, (a, b)     # versions grow by one
            top = b["version"]
            gap = b["updated_at"] - a["updated_at"]
            gaps.append(gap)
            if gap < INTERVAL - 0.001:    # (updated_at: the publish time, in whole ms)
                close.append((a, b))
    return gaps, close, resent
