"""`profiles broker-soak`: how the embedded broker's CPU grows with what it holds, without the
pipeline. One producer sends record batches of a fixed size at a fixed rate to a topic of its
own; one consumer reads them as the workers do (fetch max wait from kafka.compat); every
interval prints the broker's CPU, the batches and records it holds, and the consumer's delivery
delay. Options try the settings a broker could honour: topic retention and segment configs, and
DeleteRecords up to what the consumer has read.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from deploy import broker as embedded
from streams import compat
from tools.bench.suite import _cpu_seconds, _rss_mb

TOPIC = "broker-soak"
VALUE = b'{"user_id": 1234567, "item_id": 7654321, "action": "click", "ts": 1700000000}' * 2


@dataclass
class Interval:
    seconds: float               # since the start, at the end of the interval
    batches: int                 # batches held in the topic
    records: int                 # records held in the topic
    broker_cpu: float            # CPU seconds per second over the interval
    broker_rss_mb: float
    delay_p50_ms: float | None   # record timestamp to the consumer's getmany, in the interval
    delay_p99_ms: float | None
    delivered: int               # records read in the interval


@dataclass
class SoakResult:
    intervals: list[Interval] = field(default_factory=list)
    oldest_offset_readable: int | None = None    # first offset a fresh reader gets at the end
    delete_records: str | None = None            # what DeleteRecords answered, if tried
    broker_alive: bool = True


async def _soak(bootstrap: str, broker_pid: int, partitions: int, rate: float,
                batch_records: int, seconds: float, interval: float, fetch_wait_ms: int,
                topic_configs: dict[str, str], delete_every: float | None,
                say: Callable[[str], None]) -> SoakResult:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, partitions, 1, topic_configs=topic_configs)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=fetch_wait_ms)
    await producer.start()
    await consumer.start()
    tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    result = SoakResult()
    sent = {"batches": 0, "records": 0}
    delays: list[float] = []
    delivered = [0]
    positions = {tp: 0 for tp in tps}
    stop = asyncio.Event()

    def acked(fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is None:
            sent["batches"] += 1
            sent["records"] += batch_records

    async def produce() -> None:
        # every tick, one batch of `batch_records` to each partition: rate = tick rate x size
        tick = partitions * batch_records / rate
        t0, n = time.monotonic(), 0
        pending: list[asyncio.Future] = []
        while not stop.is_set():
            for p in range(partitions):
                batch = producer.create_batch()
                now_ms = int(time.time() * 1000)
                for _ in range(batch_records):
                    batch.append(key=None, value=VALUE, timestamp=now_ms)
                batch.close()
                fut = await producer.send_batch(batch, TOPIC, partition=p)
                fut.add_done_callback(acked)
                pending.append(fut)
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
            n += 1
            ahead = t0 + n * tick - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def consume() -> None:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=500)
            now_ms = time.time() * 1000
            for tp, recs in got.items():
                delays.extend(now_ms - r.timestamp for r in recs)
                delivered[0] += len(recs)
                positions[tp] = recs[-1].offset + 1

    async def delete_read() -> None:
        while not stop.is_set():
            await asyncio.sleep(delete_every)
            try:
                await asyncio.wait_for(admin.delete_records(
                    {tp: RecordsToDelete(off) for tp, off in positions.items()}), 10)
                result.delete_records = "accepted"
            except Exception as e:      # noqa: BLE001 - what the broker answers is the finding
                result.delete_records = f"{type(e).__name__}: {e}"
                say(f"  DeleteRecords: {result.delete_records}")
                return

    tasks = [asyncio.create_task(produce()), asyncio.create_task(consume())]
    if delete_every:
        tasks.append(asyncio.create_task(delete_read()))
    t0 = time.monotonic()
    cpu0 = _cpu_seconds(broker_pid)
    try:
        while time.monotonic() - t0 < seconds:
            await asyncio.sleep(interval)
            if any(t.done() for t in tasks[:2]):
                break
            cpu = _cpu_seconds(broker_pid)
            pct = np.percentile(delays, [50, 99]) if delays else (None, None)
            row = Interval(time.monotonic() - t0, sent["batches"], sent["records"],
                           (cpu - cpu0) / interval, _rss_mb(broker_pid) or 0.0,
                           pct[0], pct[1], delivered[0])
            cpu0 = cpu
            delays.clear()
            delivered[0] = 0
            result.intervals.append(row)
            say(_row(row))
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks[:2]:
            if t.done() and not t.cancelled() and t.exception() is not None:
                say(f"  {t.get_coro().__name__} failed: {t.exception()!r}")
        result.broker_alive = _alive(broker_pid)
        if result.broker_alive:
            result.oldest_offset_readable = await _first_offset(bootstrap, tps[0])
        for c in (consumer, producer):
            try:
                await asyncio.wait_for(c.stop(), 10)
            except Exception:           # noqa: BLE001 - the broker may be gone
                pass
        await admin.close()
    return result


async def _first_offset(bootstrap: str, tp: TopicPartition) -> int | None:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        c.assign([tp])
        await c.seek_to_beginning(tp)
        got = await c.getmany(tp, timeout_ms=3000, max_records=1)
        return got[tp][0].offset if got.get(tp) else None
    finally:
        await c.stop()


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _ms(v: float | None) -> str:
    return f"{v:,.0f}" if v is not None else "-"


def _row(r: Interval) -> str:
    return (f"| {r.seconds:,.0f} | {r.batches:,} | {r.records:,} | {r.broker_cpu:.2f} | "
            f"{r.broker_rss_mb:,.0f} | {_ms(r.delay_p50_ms)} | {_ms(r.delay_p99_ms)} | "
            f"{r.delivered:,} |")


HEADER = ["| s | batches held | records held | broker CPU | broker RSS MiB | delay p50 ms | "
          "delay p99 ms | read in interval |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]


def run_broker_soak(workdir: Path, partitions: int, rate: float, batch_records: int,
                    seconds: float, interval: float, topic_configs: dict[str, str],
                    delete_every: float | None, say: Callable[[str], None] = print
                    ) -> SoakResult:
    workdir.mkdir(parents=True, exist_ok=True)
    port = embedded.free_port()
    st, _ = embedded.start(workdir / "run", port)
    fetch_wait = compat.consumer_fetch_max_wait_ms("tansu") or 500
    say(f"embedded broker pid {st.pid}: {partitions} partitions, {rate:,.0f} records/s in "
        f"batches of {batch_records} ({rate / batch_records:,.0f} batches/s), consumer fetch "
        f"max wait {fetch_wait} ms, topic configs {topic_configs or 'none'}"
        + (f", DeleteRecords every {delete_every:.0f} s" if delete_every else ""))
    for line in HEADER:
        say(line)
    try:
        return asyncio.run(_soak(f"127.0.0.1:{port}", st.pid, partitions, rate, batch_records,
                                 seconds, interval, fetch_wait, topic_configs, delete_every,
                                 say))
    finally:
        embedded.stop(workdir / "run")
