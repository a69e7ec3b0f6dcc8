"""Time a consumer group's processes the same way whatever runs them: from the process start
until the group has committed the end of every partition of its input, with the start-up (the
process start until the group is Stable with a member) apart."""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.faust_compat.aiokafka_calls import refresh_metadata
from tools.bench.proc import cpu_seconds, peak_rss_mb

POLL = 0.1                  # seconds between looks at the group


@dataclass
class GroupRun:
    """One timed run: seconds from the process start."""
    name: str
    events: int                 # records in the input topic (malformed ones included)
    joined: float               # the group first Stable with a member
    done: float                 # every partition's end committed
    cpu_seconds: float          # of the processes (children included) over the run
    peak_rss_mb: float | None = None

    @property
    def rate(self) -> float:
        """Events per second from the process start."""
        return self.events / self.done

    @property
    def rate_after_start(self) -> float:
        """Events per second from the group's first Stable state."""
        return self.events / (self.done - self.joined)

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.events * 1e6


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        await refresh_metadata(consumer)    # every topic's (nothing is subscribed)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                        or ())]
        if not tps:
            raise RuntimeError(f"topic {topic} has no partitions")
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def create_topic_like(bootstrap: str, name: str, partitions: int) -> None:
    """A topic (replication 1) for a peer's output: Kafka Streams does not create its sinks."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


def _group_stable(response) -> bool:
    """Whether a DescribeGroups answer says Stable with at least one member."""
    for group in response.groups:
        state, members = group[2], group[5]
        if state == "Stable" and members:
            return True
    return False


async def _watch(bootstrap: str, group: str, ends: dict[TopicPartition, int],
                 started: float, alive: Callable[[], bool], timeout: float,
                 say: Callable[[str], None], name: str) -> tuple[float, float]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        joined: float | None = None
        last_say = 0.0
        total = sum(ends.values())
        while True:
            now = time.monotonic()
            if now - started > timeout:
                raise RuntimeError(f"{name}: the group {group} did not commit every "
                                   f"partition's end in {timeout:.0f} s")
            if not alive():
                raise RuntimeError(f"{name}: a process exited before its group committed "
                                   "every partition's end")
            try:
                if joined is None and _group_stable(
                        (await admin.describe_consumer_groups([group]))[0]):
                    joined = now - started
                committed = await admin.list_consumer_group_offsets(group)
            except KafkaError as e:     # e.g. no coordinator yet: the first group of a broker
                if not e.retriable:
                    raise
                await asyncio.sleep(POLL)
                continue
            got = {tp: committed[tp].offset for tp in ends if tp in committed}
            done_n = sum(min(got.get(tp, 0), end) for tp, end in ends.items())
            if joined is not None and all(got.get(tp, -1) >= end for tp, end in ends.items()):
                return joined, time.monotonic() - started
            if now - last_say > 5:
                say(f"  {name}: {done_n:,} of {total:,} committed")
                last_say = now
            await asyncio.sleep(POLL)
    finally:
        await admin.close()


def time_group(name: str, cmds: list[list[str]], logs: list[Path], bootstrap: str, group: str,
               topic: str, say: Callable[[str], None], cwd: Path | None = None,
               env: dict[str, str] | None = None, out_topic: str | None = None,
               timeout: float = 1200) -> GroupRun:
    """Start `cmds` (one process each, all of consumer group `group` on `topic`) and time them
    until the group has committed every partition's end. `out_topic` is created first, with
    as many partitions as `topic`."""
    ends = asyncio.run(end_offsets(bootstrap, topic))
    if out_topic is not None:
        asyncio.run(create_topic_like(bootstrap, out_topic, len(ends)))
    procs: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        for cmd, log in zip(cmds, logs):
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL,
                                              cwd=cwd, env={**os.environ, **(env or {})},
                                              start_new_session=True))
        joined, done = asyncio.run(_watch(bootstrap, group, ends, started,
                                          lambda: all(p.poll() is None for p in procs),
                                          timeout, say, name))
        cpu = sum(cpu_seconds(p.pid) for p in procs)
        rss = max((peak_rss_mb(p.pid) or 0.0) for p in procs)
        return GroupRun(name, sum(ends.values()), joined, done, cpu, rss)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def _read_topic(bootstrap: str, topic: str, idle: float) -> tuple[int, dict[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    n, last = 0, {}
    try:
        seen = time.monotonic()
        while time.monotonic() - seen < idle:
            for records in (await consumer.getmany(timeout_ms=300, max_records=20000)).values():
                for r in records:
                    n += 1
                    last[r.key] = r.value
                    seen = time.monotonic()
    finally:
        await consumer.stop()
    return n, last


def output_of(bootstrap: str, topic: str, idle: float = 3.0) -> tuple[int, dict[bytes, bytes]]:
    """How many records `topic` holds, and the last value per key (read until idle)."""
    return asyncio.run(_read_topic(bootstrap, topic, idle))
