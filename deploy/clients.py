"""Producing and watching from the command line: events and items in, profile updates out.

The same concept as deploy/cli/clients.py, which is its command layer.
"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import IO, Iterator

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from features.catalog import read_item_file
from features.config import ProfileConfig
from offline.batch_io import iter_events
from streams.io.kafka_security import client_kwargs
from streams.io.producer_settings import aiokafka_producer_kwargs
from streams.io.topics import ensure_topics_answered

# Readers of the workers' outputs see committed transactions only: under exactly_once_v2 a
# worker's aborted commit (a zombie's) never shows (the same as read_uncommitted without them)
READ_COMMITTED = "read_committed"


def event_records(path: str | Path) -> Iterator[tuple[bytes | None, bytes]]:
    """(key, value) per event of an events JSONL or TAAC seq.jsonl file. The key is the decimal
    user_id when there is one; a line that is not an event object is sent as it is (keyless),
    and the workers dead-letter it with its reason."""
    with open(path, "rb") as f:
        for _, raw in iter_events(f):
            if isinstance(raw, dict):
                obj, value = raw, orjson.dumps(raw)
            else:
                value = raw
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    obj = None
            uid = obj.get("user_id") if isinstance(obj, dict) else None
            key = str(uid).encode() if type(uid) is int and uid >= 0 else None
            yield key, value


class Pacer:
    """Progress on a stream and an optional rate limit (events/s)."""

    def __init__(self, rate: float | None, out: IO | None, label: str):
        self.rate, self.out, self.label = rate, out, label
        self.start = self.last = time.monotonic()
        self.n = 0

    async def tick(self) -> None:
        self.n += 1
        now = time.monotonic()
        if self.rate:
            ahead = self.n / self.rate - (now - self.start)
            if ahead > 0.01:
                await asyncio.sleep(ahead)
        if self.out is not None and now - self.last >= 1.0:
            self.last = now
            print(f"{self.label}: {self.n:,} sent ({self.n / (now - self.start):,.0f}/s)",
                  file=self.out, flush=True)

    def done(self) -> float:
        return self.n / max(time.monotonic() - self.start, 1e-9)


async def produce_records(cfg: ProfileConfig, topic: str, records, rate: float | None,
                          progress: IO | None, label: str) -> tuple[int, float]:
    """Send (key, value) records to `topic`, at `rate` events/s if given."""
    # Create the topics first: a broker that auto-creates them would pick its own partition
    # count, which the state table's changelog would then not match.
    await ensure_topics_answered(cfg)
    producer = AIOKafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers,
                                **aiokafka_producer_kwargs(cfg))
    await producer.start()
    pacer = Pacer(rate, progress, label)
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value=value, key=key))
            await pacer.tick()
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return pacer.n, pacer.done()


def produce_events(cfg: ProfileConfig, path: str | Path, rate: float | None = None,
                   progress: IO | None = sys.stderr) -> tuple[int, float]:
    """Send every event of the file to `user-events`, keyed by user_id. Returns (n, events/s)."""
    return asyncio.run(produce_records(cfg, cfg.kafka.topics.user_events, event_records(path),
                                       rate, progress, "produce"))


def load_items(cfg: ProfileConfig, path: str | Path,
               progress: IO | None = sys.stderr) -> tuple[int, float]:
    """Publish an item catalog file to the compacted `item-features` topic."""
    records = ((str(i).encode(), orjson.dumps({"item_id": i, "features": f}))
               for i, f in read_item_file(path))
    return asyncio.run(produce_records(cfg, cfg.kafka.topics.item_features, records, None,
                                       progress, "items"))


async def _tail(cfg: ProfileConfig, topic: str, from_beginning: bool, limit: int | None,
                idle_timeout: float | None, out: IO) -> int:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=cfg.kafka.bootstrap_servers,
                                **client_kwargs(cfg), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                isolation_level=READ_COMMITTED)
    await consumer.start()
    n = 0
    last = time.monotonic()
    try:
        while limit is None or n < limit:
            batches = await consumer.getmany(timeout_ms=500)
            got = [r for records in batches.values() for r in records]
            if got:
                last = time.monotonic()
            elif idle_timeout is not None and time.monotonic() - last > idle_timeout:
                break
            for r in got:
                out.write(r.value.decode("utf-8", "backslashreplace") + "\n")
                n += 1
                if limit is not None and n >= limit:
                    break
            out.flush()
    finally:
        await consumer.stop()
    return n


def tail(cfg: ProfileConfig, topic: str, from_beginning: bool = False, limit: int | None = None,
         idle_timeout: float | None = None, out: IO = sys.stdout) -> int:
    return asyncio.run(_tail(cfg, topic, from_beginning, limit, idle_timeout, out))


def latest_by_key(cfg: ProfileConfig, topic: str, idle_timeout: float = 3.0) -> dict[bytes, dict]:
    """Read a compacted topic from the start until idle; the last record per key."""
    return dict(read_all(cfg, topic, idle_timeout))


def read_all(cfg: ProfileConfig, topic: str,
             idle_timeout: float = 3.0) -> list[tuple[bytes, dict]]:
    """Read a topic from the start until idle: every (key, JSON value), in order per
    partition."""
    async def run():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=cfg.kafka.bootstrap_servers,
                                    **client_kwargs(cfg),
                                    group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="earliest",
                                    isolation_level=READ_COMMITTED)
        await consumer.start()
        out: list[tuple[bytes, dict]] = []
        last = time.monotonic()
        try:
            while time.monotonic() - last < idle_timeout:
                batches = await consumer.getmany(timeout_ms=300, max_records=10000)
                for records in batches.values():
                    for r in records:
                        out.append((r.key, orjson.loads(r.value)))
                        last = time.monotonic()
        finally:
            await consumer.stop()
        return out
    return asyncio.run(run())
