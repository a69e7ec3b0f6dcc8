"""The commit's decisions (features.publish_rules), case by case: every combination of what is
known of a user, against the rule written out as a table."""
from __future__ import annotations

import itertools

from features.publish_rules import (
    AfterEvaluation,
    after_evaluation,
    hold_declined,
    hold_unevaluated,
    maybe_lost_record,
)

P, H, U, N = (AfterEvaluation.PUBLISH, AfterEvaluation.HOLD, AfterEvaluation.UNHOLD,
              AfterEvaluation.NOTHING)


class Strategy:
    def __init__(self, answer: bool):
        self.answer, self.asked = answer, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.answer


def test_after_evaluation_every_case():
    # (changed, held, should_update, publish_now) -> fate, for a user with events of its own
    table = {
        (True, False, True, True): P, (True, False, True, False): H,
        (True, False, False, True): N, (True, False, False, False): N,
        # a held change was let through when it was held: should_update is not asked again
        (True, True, True, True): P, (True, True, False, True): P,
        (True, True, True, False): H, (True, True, False, False): H,
        # back to the published arrays: a held user stays held until the timer sends it
        (False, True, True, True): N, (False, True, False, False): N,
        (False, True, True, False): N, (False, True, False, True): N,
        (False, False, True, True): N, (False, False, False, False): N,
        (False, False, True, False): N, (False, False, False, True): N,
    }
    assert len(table) == 16
    for (changed, held, wanted, now), fate in table.items():
        strategy = Strategy(wanted)
        got = after_evaluation(changed, held, False, strategy, now)
        assert got is fate, (changed, held, wanted, now)
        assert strategy.asked == (1 if changed and not held else 0)
    # sent by the timer (a held user): published when changed, else let go
    for wanted, now in itertools.product((False, True), repeat=2):
        assert after_evaluation(True, True, True, Strategy(wanted), now) is (P if now else H)
        assert after_evaluation(False, True, True, Strategy(wanted), now) is U


def test_hold_before_evaluation():
    for by_timer, redelivered, wants, now in itertools.product((False, True), repeat=4):
        got = hold_unevaluated(by_timer, redelivered, wants, now)
        assert got == (not by_timer and not redelivered and wants and not now)
    assert hold_declined(True, Strategy(False)) and hold_declined(False, Strategy(True))
    assert not hold_declined(False, Strategy(False))
    asked = Strategy(False)
    assert hold_declined(True, asked) and asked.asked == 0     # held already: not asked


def test_a_record_is_sent_again_only_for_events_the_state_holds():
    assert maybe_lost_record(True, 3, 100, 100, False)         # the last applied event again
    assert maybe_lost_record(True, 3, 7, 100, False)
    assert not maybe_lost_record(True, 3, 101, 100, False)     # new events: nothing lost
    assert not maybe_lost_record(False, 3, 7, 100, False)      # no stored state
    assert not maybe_lost_record(True, 0, 7, 100, False)       # never published
    assert not maybe_lost_record(True, 3, 7, 100, True)        # sent again already
