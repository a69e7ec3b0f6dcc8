"""When a user's profile is published, held back, or sent again: the decisions of a commit,
as pure functions of what is known of the user (streams.pipeline.batch_update asks them and
does what they say; tests/unit/features/test_publish_rules.py holds every case).

FEATURES.md §7: a record goes out when the arrays change, with the version grown by one. The
update strategy (`should_update`, the seed's 自定义更新策略) may decline a change; the hold-back
(`real_time_update.update_interval`, features.holdback) delays one that comes within the
interval of the last publish; and a user whose events come again after a crash gets the record
of their state's version once more, since that record may have been lost.
"""
from __future__ import annotations

from enum import Enum
from typing import Callable


class AfterEvaluation(Enum):
    PUBLISH = "publish"         # the changed profile goes out now, as the next version
    HOLD = "hold"               # it waits until the hold-back's interval has passed
    UNHOLD = "unhold"           # the timer's user, its arrays back to the published ones
    NOTHING = "nothing"


def after_evaluation(changed: bool, held: bool, sent_by_timer: bool,
                     wanted: Callable[[], bool], publish_now: bool) -> AfterEvaluation:
    """The fate of an evaluated profile. `changed`: its arrays differ from the published ones;
    `held`: the state waits for a held publish; `sent_by_timer`: the hold-back's timer took
    the user into this commit (no events of its own); `wanted()`: the update strategy's
    should_update for the events since the last flush (asked only when needed: a held change
    was let through when it was held); `publish_now`: the hold-back lets a publish out now.
    A held user whose arrays went back to the published ones is let go when the timer sends
    it (until then it stays held: events may change it again before its time)."""
    if changed and (held or wanted()):
        return AfterEvaluation.PUBLISH if publish_now else AfterEvaluation.HOLD
    if sent_by_timer:
        return AfterEvaluation.UNHOLD
    return AfterEvaluation.NOTHING


def hold_unevaluated(sent_by_timer: bool, redelivered: bool, wants_profile: bool,
                     publish_now: bool) -> bool:
    """Whether a user is held before any evaluation: events within the interval of the last
    publish (whether the arrays changed is learnt when the timer sends them). Not a user the
    timer is sending now, not one with redelivered events (the record a crash may have lost is
    sent again at once), not one that wants no profile."""
    return not (sent_by_timer or redelivered or not wants_profile or publish_now)


def hold_declined(held: bool, wanted: Callable[[], bool]) -> bool:
    """For a user held before evaluation: whether it is (still) held. A user held already
    stays held; otherwise the strategy's should_update decides, as for a change."""
    return held or wanted()


def maybe_lost_record(stored: bool, version: int, first_offset: int, source_offset: int,
                      sent_again_already: bool) -> bool:
    """Whether the record of a stored state's version may have been lost and is to be sent
    again (once per user until a rebalance or a dropped checkpoint): the user's events come
    again, from an offset the state has already applied, and a version was published."""
    return stored and version > 0 and first_offset <= source_offset and not sent_again_already
