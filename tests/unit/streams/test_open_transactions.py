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
    leaders = ck.KafkaException(ck.KafkaError(ck.KafkaError._NOENT, "No leaders found"))
    s = Scripted([{TP: (0, 128)}, leaders, {TP: (0, 128)}, {}])
    assert asyncio.run(s.settle([TP, ("app-user-state-changelog", 1)])) == {}
    assert len(s.asked) == 4 and s.asked[1:] == [[TP]] * 3      # only what was open is asked


def test_it_gives_up_at_its_timeout_with_what_is_still_open():
    s = Scripted([{TP: (0, 128)}] * 1000, timeout=0.05)
    assert asyncio.run(s.settle([TP])) == {TP: (0, 128)}


def test_nothing_open_answers_at_once():
    s = Scripted([{}])
    assert asyncio.run(s.settle([TP])) == {} and len(s.asked) == 1
