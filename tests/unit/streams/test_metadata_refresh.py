"""An assignment made while the metadata knows no partition of a subscribed topic (the group
leader's view during a broker restart: it assigns nobody anything) refreshes the metadata every
second until the topic is known, so aiokafka's coordinator rejoins then, not at its periodic
refresh 5 minutes later (make chaos on Apache Kafka idled 5 min 15 s)."""
from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError

from streams.faust_compat.consumer import refresh_until_known, unknown_topics


class Cluster:
    def __init__(self, known: dict[str, int]):
        self.known = known

    def partitions_for_topic(self, topic: str):
        n = self.known.get(topic, 0)
        return set(range(n)) if n else None


class Client:
    """aiokafka's client as the refresh uses it: its metadata learns the topics at the
    `learn_at`-th refresh; the first `fail` refreshes meet no broker."""

    def __init__(self, learn_at: int, fail: int = 0):
        self.cluster = Cluster({"user-profiles-__assignor-__leader": 1})
        self.learn_at, self.fail, self.refreshes = learn_at, fail, 0

    async def force_metadata_update(self):
        self.refreshes += 1
        if self.refreshes <= self.fail:
            raise KafkaConnectionError("Unable to bootstrap")
        if self.refreshes >= self.learn_at:
            self.cluster.known.update({"user-events": 6, "user-profiles-user-state-changelog": 6})
        return True


TOPICS = {"user-events", "user-profiles-user-state-changelog", "user-profiles-__assignor-__leader"}


def test_unknown_topics():
    cluster = Cluster({"user-events": 6})
    assert unknown_topics(cluster, {"user-events", "x"}) == {"x"}
    assert unknown_topics(cluster, {"user-events"}) == set()


def test_refreshes_until_every_topic_is_known_through_failed_refreshes():
    client = Client(learn_at=4, fail=2)
    assert asyncio.run(refresh_until_known(client, TOPICS, every=0, bound=60))
    assert client.refreshes == 4
    assert not unknown_topics(client.cluster, TOPICS)


def test_known_topics_need_no_refresh_and_a_bound_ends_it():
    client = Client(learn_at=1)
    client.cluster.known.update({"user-events": 6, "user-profiles-user-state-changelog": 6})
    assert asyncio.run(refresh_until_known(client, TOPICS, every=0, bound=60))
    assert client.refreshes == 0
    never = Client(learn_at=10**9)
    assert not asyncio.run(refresh_until_known(never, TOPICS, every=0.01, bound=0.05))
    assert 1 <= never.refreshes <= 10
