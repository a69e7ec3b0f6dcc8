"""`profiles bootstrap` (docs/BOOTSTRAP.md) on the real broker: a sample log split in two, the
first part bootstrapped from a file while the topic holds only the second, then a worker takes
over. Every user's latest record and state equal the batch path over the whole log, the topic's
events are applied once, and the dead letters match by reason; in both hand-over modes, after a
bootstrap SIGKILLed halfway and run again, and refused where it would not be exact."""
from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.admin import AdminClient

from deploy.broker import free_port
from deploy.clients import load_items, produce_events
from deploy.workers import pid_file
from features.config import load_config
from features.events import Rejection
from features.runtime import FeatureRuntime
from streams.io.kafka_security import client_kwargs
from streams.pipeline.topology import state_changelog_topic
from tests.harness import (
    caught_up,
    events_acked,
    http_json,
    latest_values,
    profile_worker,
    profiles_cli,
    state_diffs,
    topic_size,
    topic_values,
    wait_for,
    write_config,
)
from tests.offline_data import events_to_parquet
from tools.data.sample import SampleSpec, write_sample
from tools.verify import batch_profiles, compare

pytestmark = pytest.mark.integration


def _lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().splitlines() if line.strip()]


def _produce(cfg, lines: list[bytes], tmp_path: Path) -> None:
    """The lines to user-events as `profiles produce` sends a file (keyed by user_id)."""
    f = tmp_path / "to-produce.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    produce_events(cfg, f, progress=None)


def _end_offsets(cfg) -> list[int]:
    async def run() -> list[int]:
        c = AIOKafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                             **client_kwargs(cfg), group_id=None)
        await c.start()
        try:
            tps = [TopicPartition(cfg.kafka.topics.user_events, p)
                   for p in range(cfg.kafka.partitions)]
            end = await c.end_offsets(tps)
            return [end[tp] for tp in tps]
        finally:
            await c.stop()
    return asyncio.run(run())


def _delete_before(cfg, offsets: list[int]) -> None:
    """The topic's retention has passed the first part: its records before `offsets` are gone."""
    from confluent_kafka import TopicPartition as TP
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    futs = admin.delete_records([TP(cfg.kafka.topics.user_events, p, o)
                                 for p, o in enumerate(offsets)])
    for f in futs.values():
        f.result(30)


def _setup(broker, tmp_path: Path):
    sample = tmp_path / "sample"
    write_sample(SampleSpec(users=80, days=20, items=300, bad_rate=0.02), sample)
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 3},
                            real_time_update={"batch_size": 200, "commit_interval": 0})
    cfg = load_config(cfg_path, env={})
    items = sample / "item_feat_dict.json"
    load_items(cfg, items, progress=None)
    return cfg_path, cfg, items, _lines(sample / "events.jsonl")


def _bootstrap(cfg_path: Path, part: Path, items: Path, *handover: str, env=None):
    return profiles_cli(cfg_path, "bootstrap", "--events", str(part), "--items", str(items),
                        *handover, env=env)


def _delivered(cfg, w, boot: dict) -> bool:
    """Every record the bootstrap and the worker made is in its topic."""
    stats = http_json(w.url("/stats"))[1]
    c, t = stats["counts"], cfg.kafka.topics
    dead = sum(v for k, v in c.items() if k.startswith("dlq_"))
    return not stats["state_cache"]["dirty"] and \
        topic_size(cfg, t.profile_updates) == c["published"] + boot["profiles"] and \
        topic_size(cfg, t.profile_aggregates) == c["aggregates"] + boot["aggregates"] and \
        topic_size(cfg, t.dlq) == dead + sum(boot["dead_letters"].values())


def _take_over_and_check(workers, cfg_path: Path, cfg, items: Path, whole: Path,
                         tmp_path: Path, topic_events: int, boot: dict):
    """A worker takes over; the published records, the states and the dead letters equal
    the batch path over the whole log, and the topic's events were applied once."""
    w = profile_worker(workers, cfg_path, 1, free_port(), "w").start()
    w.wait_healthy()
    caught_up(cfg)
    assert wait_for(lambda: _delivered(cfg, w, boot), 60, what="outputs delivered")
    expected = batch_profiles(cfg, items, whole, tmp_path / "batch.jsonl")
    published = {int(k): v for k, v in
                 latest_values(cfg, cfg.kafka.topics.profile_updates).items()}
    c = compare(published, expected)
    assert c.ok, (c.summary(), c.mismatched[:3])
    diffs = state_diffs(cfg, w, whole, sorted(expected))
    assert not diffs, list(diffs.items())[:3]
    want = Counter(orjson.loads(line)["reason"]
                   for line in (tmp_path / "batch.dlq.jsonl").read_bytes().splitlines())
    got = Counter(r["reason"] for r in topic_values(cfg, cfg.kafka.topics.dlq))
    assert got == want and sum(want.values()) > 0, (got, want)
    counts = http_json(w.url("/stats"))[1]["counts"]
    assert counts["events_in"] == topic_events, counts
    assert counts["redelivered"] == 0, counts
    return w, counts


@pytest.mark.parametrize("engine", ["local", "spark"], ids=["local-jsonl", "spark-parquet"])
def test_bootstrap_at_offsets_then_the_stream(broker, workers, tmp_path, engine):
    cfg_path, cfg, items, lines = _setup(broker, tmp_path)
    k = len(lines) * 3 // 5
    part1 = tmp_path / "part1.jsonl"
    part1.write_bytes(b"\n".join(lines[:k]) + b"\n")
    exported = lines[:k]
    extra: tuple[str, ...] = ()
    if engine == "spark":
        # the lake's copy: Parquet, holding the lines a typed table can (tests.offline_data)
        parquet = events_to_parquet(part1, tmp_path / "part1.parquet")
        kept = {int(v) for v in pq_offsets(parquet)}
        exported = [raw for i, raw in enumerate(lines[:k], start=1) if i in kept]
        part1 = parquet
        extra = ("--engine", "spark", "--master", "local[2]", "--order-by", "offset")
    _produce(cfg, lines[:k], tmp_path)
    until = _end_offsets(cfg)
    _produce(cfg, lines[k:], tmp_path)
    _delete_before(cfg, until)                      # the topic holds only the second part
    offsets_file = tmp_path / "until.json"
    offsets_file.write_bytes(orjson.dumps({str(p): o for p, o in enumerate(until)}))

    r = _bootstrap(cfg_path, part1, items, "--until-offsets", str(offsets_file), *extra)
    assert r.returncode == 0, r.stderr
    summary = orjson.loads(r.stdout.splitlines()[-1])
    assert summary["group_offsets"] == {str(p): o for p, o in enumerate(until)}
    assert summary["users"] > 0 and summary["events"] == len(exported)
    if engine == "local":       # (what follows does not depend on the engine)
        # run again: nothing to do
        again = _bootstrap(cfg_path, part1, items, "--until-offsets", str(offsets_file))
        assert again.returncode == 0 and \
            orjson.loads(again.stdout.splitlines()[-1])["already_done"]

    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b"\n".join(exported + lines[k:]) + b"\n")
    _take_over_and_check(workers, cfg_path, cfg, items, whole, tmp_path, len(lines) - k,
                         summary)
    if engine != "local":
        return
    # the stream has run: a new bootstrap is refused, with the reason
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"\n".join(lines[:k - 1]) + b"\n")
    refused = _bootstrap(cfg_path, other, items, "--until-offsets", str(offsets_file))
    assert refused.returncode != 0 and "workers are in consumer group" in refused.stderr


def pq_offsets(path: Path) -> list[int]:
    import pyarrow.parquet as pq
    return pq.read_table(path, columns=["offset"]).column("offset").to_pylist()


def _split_at_time(lines: list[bytes]) -> tuple[int, list[bytes], list[bytes]]:
    """(T, the log up to T, the rest): valid events by timestamp; lines that are not events
    go with the half of the file they were in."""
    ts = []
    for raw in lines:
        try:
            obj = orjson.loads(raw)
            t = obj.get("timestamp") if isinstance(obj, dict) else None
        except orjson.JSONDecodeError:
            t = None
        ts.append(t if type(t) is int else None)
    T = sorted(t for t in ts if t is not None)[len(lines) // 2]
    first = [raw for i, (raw, t) in enumerate(zip(lines, ts))
             if (t is not None and t <= T) or (t is None and i < len(lines) // 2)]
    rest = [raw for i, (raw, t) in enumerate(zip(lines, ts))
            if (t is not None and t > T) or (t is None and i >= len(lines) // 2)]
    return T, first, rest


def test_bootstrap_at_a_time_killed_halfway_and_run_again_then_the_stream(broker, workers,
                                                                         tmp_path):
    cfg_path, cfg, items, lines = _setup(broker, tmp_path)
    T, first, rest = _split_at_time(lines)
    part1 = tmp_path / "part1.jsonl"
    part1.write_bytes(b"\n".join(first) + b"\n")
    # the topic still holds the last valid events up to T, then everything after
    parser, now = FeatureRuntime.from_config(cfg).parser, time.time()
    tail = [raw for raw in first[-len(first) // 5:]
            if type(parser.parse_line(raw, now)) is not Rejection]
    _produce(cfg, tail + rest, tmp_path)

    r = _bootstrap(cfg_path, part1, items, "--until", str(T),
                   env={"PROFILES_BOOTSTRAP_KILL_AFTER": "20"})
    assert r.returncode == -signal.SIGKILL, r.returncode
    # half written: states in the changelog, nothing published, the group not committed
    assert topic_size(cfg, state_changelog_topic(cfg)) == 20
    assert topic_size(cfg, cfg.kafka.topics.profile_updates) == 0
    assert not events_acked(cfg)
    r = _bootstrap(cfg_path, part1, items, "--until", str(T))
    assert r.returncode == 0, r.stderr
    summary = orjson.loads(r.stdout.splitlines()[-1])
    assert summary["resumed"] is True
    # the killed run's spill files are gone with the finished one's
    assert not (Path(tempfile.gettempdir()) / f"profiles-bootstrap-{summary['plan']}").exists()
    assert summary["group_offsets"] == {str(p): 0 for p in range(cfg.kafka.partitions)}

    whole = tmp_path / "whole.jsonl"
    whole.write_bytes(b"\n".join(first + rest) + b"\n")
    w, counts = _take_over_and_check(workers, cfg_path, cfg, items, whole, tmp_path,
                                     len(tail) + len(rest), summary)
    assert counts["handed_over"] == len(tail) > 0, counts
    # told to stop this host's workers, it does; then the system has state: refused
    pid_file(cfg, 1).write_text(str(w.proc.pid))
    other = tmp_path / "other.jsonl"
    other.write_bytes(b"\n".join(first[:-1]) + b"\n")
    r = _bootstrap(cfg_path, other, items, "--until", str(T), "--stop-workers")
    assert r.returncode == 1 and f"stopped worker pid {w.proc.pid}" in r.stderr, r.stderr
    assert "the state changelog" in r.stderr and "holds" in r.stderr, r.stderr
    assert w.proc.wait(timeout=30) is not None
