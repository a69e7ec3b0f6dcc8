"""An aiokafka client that knows no broker gets one again (streams.faust_compat.aiokafka_calls).

A broker that has just started answers Metadata with no brokers; aiokafka then keeps only its
bootstrap connection, and once that connection is gone it asks nobody, forever: a worker of a
CI chaos run waited 600 s with "Unable to update metadata from []" every second. The state is
set up directly here (a client that holds neither), since when Kafka answers with no brokers
cannot be timed; the broker it then has to find is real."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka.client import AIOKafkaClient

from streams.faust_compat.aiokafka_calls import (
    aiokafka_metadata_update,
    knows_no_broker,
    rebootstrap_when_lost,
)

pytestmark = pytest.mark.integration


async def _update_from_nothing(bootstrap: str, update) -> tuple[bool, bool]:
    """(the update's answer, whether the client then knows a broker), for a client in the
    state the bug leaves: no broker in its metadata, no bootstrap connection."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        assert knows_no_broker(client)
        ok = await update(client, client.cluster, [])
        return ok, not knows_no_broker(client) and bool(client.cluster.brokers())
    finally:
        await client.close()


def test_a_client_that_knows_no_broker_bootstraps_again(broker):
    stuck = asyncio.run(_update_from_nothing(broker.bootstrap, aiokafka_metadata_update()))
    assert stuck == (False, False)      # aiokafka's own update: nobody to ask
    healed = asyncio.run(_update_from_nothing(broker.bootstrap,
                                              rebootstrap_when_lost(aiokafka_metadata_update())))
    assert healed == (True, True)
