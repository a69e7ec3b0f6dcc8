"""A worker whose start meets a broker that does not answer starts again in place, within a bound
(streams/worker.py). The chaos run on Apache Kafka lost two workers to it: one restarted during a
cut of every connection (Faust's producer: "Unable to bootstrap"), one while the broker was being
killed (the topic check: NodeNotReadyError)."""
from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from features.config import load_config
from streams import worker
from streams.io import topics
from streams.io.topics import TopicMismatch, broker_unavailable
from streams.web import restart


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("kafka:\n  broker: 127.0.0.1:1\n")
    return load_config(path, env={})


def stopped_by(exc: BaseException | None, code: int = 1) -> SystemExit:
    """The SystemExit mode's `exiting` raises while handling `exc` (so `exc` is its context)."""
    try:
        try:
            if exc is not None:
                raise exc
            raise SystemExit(code)
        except BaseException:
            raise SystemExit(code)
    except SystemExit as e:
        return e


def test_broker_unavailable_finds_the_kafka_error_down_the_chain():
    bootstrap = KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 27305)]")
    assert broker_unavailable(bootstrap) is bootstrap
    not_ready = NodeNotReadyError("node 1")
    try:
        try:
            raise not_ready
        except NodeNotReadyError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert broker_unavailable(wrapped) is not_ready
    assert broker_unavailable(KafkaTimeoutError()) is not None
    assert broker_unavailable(UnknownTopicOrPartitionError()) is not None
    # not a broker that is away: a bad request, a config error, nothing at all
    assert broker_unavailable(TopicAlreadyExistsError()) is None
    assert broker_unavailable(TopicMismatch("3 partitions, not 8")) is None
    assert broker_unavailable(ValueError("x")) is None
    assert broker_unavailable(None) is None


def test_a_start_that_met_no_broker_runs_again_until_the_deadline(cfg):
    cut = stopped_by(KafkaConnectionError("Unable to bootstrap"))
    assert worker.start_again_after(cut, cfg, time.time() + 60, retry_every=0)
    with pytest.raises(SystemExit, match="cannot start: no broker answered at 127.0.0.1:1"):
        worker.start_again_after(cut, cfg, time.time() - 1, retry_every=0)


def test_other_stops_are_not_started_again(cfg):
    deadline = time.time() + 60
    assert not worker.start_again_after(stopped_by(ValueError("a bug")), cfg, deadline, 0)
    assert not worker.start_again_after(stopped_by(None, code=0), cfg, deadline, 0)   # SIGTERM
    ok_after_error = stopped_by(KafkaConnectionError("x"), code=0)
    assert not worker.start_again_after(ok_after_error, cfg, deadline, 0)


def test_the_deadline_spans_the_execs_of_one_run_of_starts(monkeypatch):
    monkeypatch.delenv(restart.START_DEADLINE_ENV, raising=False)
    first = worker.start_deadline(wait=300)
    assert 290 < first - time.time() <= 300
    assert worker.start_deadline(wait=5) == first            # the next exec reads it
    monkeypatch.setenv(restart.START_DEADLINE_ENV, "garbage")
    assert 0 < worker.start_deadline(wait=5) - time.time() <= 5


def test_ensure_topics_waiting_retries_a_node_not_ready_then_gives_up(cfg, monkeypatch):
    calls = []

    async def not_ready(_cfg):
        calls.append(1)
        if len(calls) < 3:
            raise NodeNotReadyError("Attempt to send a request to node which is not ready")

    monkeypatch.setattr(worker, "ensure_topics", not_ready)
    worker.ensure_topics_waiting(cfg, time.time() + 60, retry_every=0)
    assert len(calls) == 3

    async def never(_cfg):
        raise NodeNotReadyError("node 1")

    monkeypatch.setattr(worker, "ensure_topics", never)
    with pytest.raises(SystemExit, match="no broker answered"):
        worker.ensure_topics_waiting(cfg, time.time() - 1, retry_every=0)

    async def mismatch(_cfg):
        raise TopicMismatch("user-events has 3 partitions, not 8")

    monkeypatch.setattr(worker, "ensure_topics", mismatch)
    with pytest.raises(TopicMismatch):
        worker.ensure_topics_waiting(cfg, time.time() + 60, retry_every=0)


def test_a_client_waits_for_a_broker_that_is_not_ready_yet_then_gives_up(cfg, monkeypatch):
    """`profiles produce` right after a broker's pause or restart (its first admin request met a
    node that was not ready: test_broker_outage's producer once did)."""
    calls = []

    async def not_ready(_cfg):
        calls.append(1)
        if len(calls) < 3:
            raise NodeNotReadyError("Attempt to send a request to node which is not ready")
        return ["user-events"]

    monkeypatch.setattr(topics, "ensure_topics", not_ready)
    assert asyncio.run(topics.ensure_topics_answered(cfg, wait=60, retry_every=0)) == \
        ["user-events"]
    assert len(calls) == 3

    async def never(_cfg):
        calls.append(1)
        raise NodeNotReadyError("node 1")

    monkeypatch.setattr(topics, "ensure_topics", never)
    with pytest.raises(NodeNotReadyError):
        asyncio.run(topics.ensure_topics_answered(cfg, wait=0, retry_every=0))

    async def mismatch(_cfg):
        raise TopicMismatch("user-events has 3 partitions, not 8")

    monkeypatch.setattr(topics, "ensure_topics", mismatch)
    with pytest.raises(TopicMismatch):
        asyncio.run(topics.ensure_topics_answered(cfg, wait=60, retry_every=0))
