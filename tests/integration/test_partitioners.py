"""Queries that work whatever the producer did: events produced with confluent-kafka and its
default partitioner (`consistent_random`, CRC32 of the key) to two groups of two workers each,
reading the same topic. With `kafka.partitioner: crc32` every user is routed straight to its
owner and nothing is counted; with the default (`murmur2`, what a user who did not set it has)
every user still answers (the other workers are asked), the mismatch counter and its alert say
so, and the log names the partitioner the keys fit. Events from a partitioner that ignores keys
(`random`) are counted as unexplained and logged by both."""
from __future__ import annotations

import io
import json
import time
import urllib.request

import confluent_kafka as ck
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.broker import free_port
from deploy.clients import tail
from features.config import load_config
from tests.harness import (
    caught_up,
    http_json,
    profile_worker,
    topic_values,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.integration
USERS = range(1000, 1200)
EVENTS_PER_USER = 2


def start_group(workers, broker, tmp_path, name: str, kafka: dict):
    cfg_path = write_config(
        tmp_path / f"{name}.yaml", broker,
        kafka={"partitions": 2, "topics": {"alerts": f"alerts-{name}"}, **kafka},
        worker={"app_id": f"profiles-{name}", "data_dir": str(tmp_path / f"data-{name}")},
        monitoring={"alert_interval_seconds": 1})
    ws = [profile_worker(workers, cfg_path, i, free_port(), f"{name}-w{i}").start()
          for i in (1, 2)]
    return load_config(cfg_path, env={}), ws


def produce_with_confluent_kafka(bootstrap: str, topic: str, users: range = USERS,
                                 **conf) -> int:
    p = ck.Producer({"bootstrap.servers": bootstrap, **conf})   # default: consistent_random
    base = int(time.time()) - 3600
    n = 0
    for u in users:
        for i in range(EVENTS_PER_USER):
            p.produce(topic, key=str(u), value=orjson.dumps(
                {"user_id": u, "item_id": 100 + i, "timestamp": base + i * 60,
                 "event_type": "click"}))
            n += 1
    assert p.flush(30) == 0
    return n


def stats(w) -> dict:
    status, body = http_json(w.url("/stats"), timeout=5)
    assert status == 200, body
    return body


def metric(w, name: str) -> float:
    text = urllib.request.urlopen(w.url("/metrics"), timeout=5).read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name)


def alerts(cfg) -> set[str]:
    """The alerts in the topic now."""
    return {a["alert"] for a in topic_values(cfg, cfg.kafka.topics.alerts)}


def alerts_until_idle(cfg) -> set[str]:
    """The alerts read until none came for 1.5 s: what the crc32 group never alerts is looked
    for a while longer than the moment the other group's alert came."""
    out = io.StringIO()
    tail(cfg, cfg.kafka.topics.alerts, from_beginning=True, idle_timeout=1.5, out=out)
    return {json.loads(line)["alert"] for line in out.getvalue().splitlines()}


def test_confluent_kafka_default_partitioner_two_workers(broker, workers, tmp_path):
    groups = {"crc32": start_group(workers, broker, tmp_path, "crc32", {"partitioner": "crc32"}),
              "murmur2": start_group(workers, broker, tmp_path, "murmur2", {})}
    for _, ws in groups.values():
        for w in ws:
            w.wait_healthy(120)
    n = produce_with_confluent_kafka(broker.bootstrap, groups["crc32"][0].kafka.topics.user_events)
    ids = ",".join(map(str, USERS))
    found = {}
    for name, (cfg, ws) in groups.items():
        assert wait_for(lambda: sum(stats(w)["counts"].get("applied", 0) for w in ws) == n, 60,
                        0.5, what=f"{name}: every event applied")
        caught_up(cfg)      # and committed: the query API reads committed states
        for w in ws:        # asked of either worker, every user answers
            status, body = http_json(w.url(f"/profiles?ids={ids}"), timeout=30)
            assert status == 200 and body["missing"] == [], (name, body["missing"][:10])
            assert all(r["user_id"] == int(u) for u, r in body["profiles"].items())
        assert http_json(ws[1].url(f"/profiles/{USERS[0]}"), timeout=10)[0] == 200
        found[name] = [stats(w) for w in ws]

    good, bad = found["crc32"], found["murmur2"]
    print(f"\n{len(USERS)} users, {n} events produced with confluent-kafka's default partitioner")
    for name, ss in found.items():
        print(f"  kafka.partitioner {name}: " + "; ".join(
            f"worker {s['instance']}: {s['partitioning']}, found off the owner "
            f"{s['counts'].get('queries_found_off_owner', 0)}" for s in ss))
    # the setting matches: nothing off its partition, every user found at its routed owner
    assert [s["partitioning"]["mismatched_events"] for s in good] == [0, 0]
    assert all(s["counts"].get("queries_found_off_owner", 0) == 0 for s in good)
    assert all(metric(w, "profiles_events_partition_mismatch_total") == 0
               for w in groups["crc32"][1])
    # the default setting does not: counted, alerted, the fitting partitioner named
    mismatched = sum(s["partitioning"]["mismatched_events"] for s in bad)
    assert 0 < mismatched < n
    assert sum(metric(w, "profiles_events_partition_mismatch_total")
               for w in groups["murmur2"][1]) == mismatched
    assert sum(s["partitioning"]["unexplained_events"] for s in bad + good) == 0
    assert sum(s["counts"].get("queries_found_off_owner", 0) for s in bad) > 0
    told = [line for w in groups["murmur2"][1]
            for line in w.log_path.read_text(errors="replace").splitlines()
            if "set kafka.partitioner: crc32" in line]
    print("  " + "\n  ".join(line.split("] ", 3)[-1] for line in told))
    assert 1 <= len(told) <= 2, told                    # once per worker that saw them
    assert all(s["partitioning"]["keys_fit"] in (None, ["crc32"]) for s in bad)
    assert wait_for(lambda: "partitioner_mismatch" in alerts(groups["murmur2"][0]), 30,
                    what="partitioner_mismatch alert")
    assert "partitioner_mismatch" not in alerts_until_idle(groups["crc32"][0])

    # a producer whose partitioner ignores keys spreads users over partitions: both say so
    topic = groups["crc32"][0].kafka.topics.user_events
    spread = produce_with_confluent_kafka(broker.bootstrap, topic, range(5000, 5100),
                                          partitioner="random")
    for name, (cfg, ws) in groups.items():
        assert wait_for(lambda: sum(stats(w)["counts"].get("applied", 0) for w in ws) == n + spread,
                        60, 0.5, what=f"{name}: every randomly partitioned event applied")
        unexplained = sum(stats(w)["partitioning"]["unexplained_events"] for w in ws)
        logs = " ".join(w.log_path.read_text(errors="replace") for w in ws)
        print(f"  random partitioner, kafka.partitioner {name}: {unexplained} of {spread} events "
              f"on a partition no known partitioner gives")
        assert 0 < unexplained < spread and "the producer's partitioner ignores keys" in logs
        assert sum(metric(w, "profiles_events_partition_unexplained_total")
                   for w in ws) == unexplained
