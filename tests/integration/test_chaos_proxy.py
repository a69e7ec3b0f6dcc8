"""The chaos run's broker proxy, against the real embedded broker: clients that bootstrap through
it stay on it (the broker advertises the proxy), a cut drops every connection and the clients
come back through it with nothing lost, and the added delay holds every round trip."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from deploy import broker as embedded
from tests.harness import create_topic
from tools.chaos.proxy import BrokerProxy

pytestmark = pytest.mark.integration


@pytest.fixture
def proxied(tmp_path):
    port, proxy_port = embedded.free_port(), embedded.free_port()
    proxy = BrokerProxy(proxy_port, port).start()
    embedded.start(tmp_path / "run", port, advertised_port=proxy_port)
    yield proxy, f"127.0.0.1:{proxy_port}"
    proxy.stop()
    embedded.stop(tmp_path / "run")


def test_clients_reconnect_through_the_proxy_after_a_cut(proxied):
    proxy, bootstrap = proxied

    async def run():
        await create_topic(bootstrap, "t", 2)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        consumer = AIOKafkaConsumer("t", bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=50)
        await producer.start()
        await consumer.start()
        got: list[bytes] = []
        try:
            for i in range(100):
                await producer.send_and_wait("t", str(i).encode(), key=str(i % 7).encode())
            before = proxy.open_connections
            cut = proxy.cut_all()
            for i in range(100, 200):
                await producer.send_and_wait("t", str(i).encode(), key=str(i % 7).encode())
            deadline = time.monotonic() + 30
            while len(set(got)) < 200 and time.monotonic() < deadline:
                for recs in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(r.value for r in recs)
        finally:
            await consumer.stop()
            await producer.stop()
        return before, cut, got

    before, cut, got = asyncio.run(run())
    assert before >= 2 and cut == before          # producer and consumer connections
    assert sorted(set(got), key=int) == [str(i).encode() for i in range(200)]
    # every connection ever made went through the proxy: more accepted than were open
    assert proxy.accepted > before


def test_added_delay_holds_every_round_trip(proxied):
    proxy, bootstrap = proxied

    async def round_trip() -> float:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("d", b"warm-up")
            t0 = time.monotonic()
            for _ in range(5):
                await producer.send_and_wait("d", b"x")
            return (time.monotonic() - t0) / 5
        finally:
            await producer.stop()

    asyncio.run(create_topic(bootstrap, "d", 2))
    proxy.set_delay(0.2)
    # a produce is a request and a response, each held 0.2 s (a lower bound: load can only
    # add to it)
    assert asyncio.run(round_trip()) >= 0.4
