"""streams.io.transactions.OpenTransactions.settle, with the broker's answers scripted: it
waits while a transaction is open or the broker cannot say, and gives up at its timeout."""
from __future__ import annotations

import asyncio

import confluent_kafka as ck

from streams.io.transactions import OpenTransactions

TP = ("app-user-state-changelog", 0)


class Scripted(OpenTransactions):
    POLL = 0.01

    def __init__(self, answers, timeout=5.0):
        super().__init__({}, timeout)
        self.answers = list(answers)
        self.asked: list[list] = []

    def open(self, tps):
        self.asked.append(list(tps))
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_it_waits_while_a_transaction_is_open_or_the_broker_cannot_say():
    leaders = ck.KafkaException(
        ck.KafkaError(ck.KafkaError.UNKNOWN_TOPIC_OR_PART, "No leaders found"))
    s = Scripted([{TP: (0, 128)}, leaders, {TP: (0, 128)}, {}])
    assert asyncio.run(s.settle([TP, ("app-user-state-changelog", 1)])) == {}
    assert len(s.asked) == 4 and s.asked[1:] == [[TP]] * 3      # only what was open is asked


def test_it_gives_up_at_its_timeout_with_what_is_still_open():
    s = Scripted([{TP: (0, 128)}] * 1000, timeout=0.05)
    assert asyncio.run(s.settle([TP])) == {TP: (0, 128)}


def test_nothing_open_answers_at_once():
    s = Scripted([{}])
    assert asyncio.run(s.settle([TP])) == {} and len(s.asked) == 1


def test_a_transactional_call_stuck_past_its_timeout_ends_the_producer(monkeypatch):
    """librdkafka's send_offsets_to_transaction can block past its timeout once the group
    coordinator went away (confluentinc/librdkafka#5456): the call is given up, and the
    producer counts as fenced, so the worker restarts with a new one."""
    import threading

    import pytest

    from streams.io import transactions

    release = threading.Event()

    class Stuck:
        def __init__(self, settings):
            pass

        def init_transactions(self, timeout):
            pass

        def begin_transaction(self):
            pass

        def send_offsets_to_transaction(self, tps, metadata, timeout):
            release.wait(10)            # past its timeout, as the bug does

        def commit_transaction(self, timeout):
            pass

    monkeypatch.setattr(transactions, "TIMEOUT", 0.05)
    monkeypatch.setattr(transactions, "STUCK_MARGIN", 0.05)

    async def run():
        p = transactions.TransactionalProducer({}, "t-1", producer_factory=Stuck)
        await p.begin()
        try:
            with pytest.raises(transactions.TransactionFenced, match="did not return within"):
                await p.commit({("t", 0): 5}, b"metadata")
        finally:
            release.set()           # (the executor's thread, left blocked, may end now)
    asyncio.run(run())


def test_a_broker_without_transactions_is_named_with_the_way_out():
    """init_transactions timing out (a broker whose transaction log cannot be created) ends the
    start with a sentence naming the setting, not librdkafka's error alone."""
    import confluent_kafka as ck
    import pytest

    from streams.io import transactions

    calls = []

    class NoCoordinator:
        def __init__(self, settings):
            pass

        def init_transactions(self, timeout):
            calls.append(timeout)
            raise ck.KafkaException(ck.KafkaError(
                ck.KafkaError.COORDINATOR_NOT_AVAILABLE, "Failed to initialize Producer ID: "
                "Broker: Coordinator not available", retriable=True))

    async def run():
        p = transactions.TransactionalProducer({}, "profiles-1", producer_factory=NoCoordinator)
        with pytest.raises(transactions.TransactionsUnavailable,
                           match="'profiles-1'.*Coordinator not available.*processing_guarantee: "
                                 "at_least_once"):
            await p.start()
        with pytest.raises(transactions.TransactionsUnavailable):
            await p.start()         # not taken as started: the next start asks again
        assert len(calls) == 2
    asyncio.run(run())
