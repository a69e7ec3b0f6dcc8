"""The chaos verdict's logic without processes: the states read is repeated until the group is
the same before and after it, users no worker had are asked again, and the per-seed table."""
from __future__ import annotations

import pytest

from tools.chaos import run as chaos
from tools.chaos.run import ChaosReport, GroupView, runs_table

VIEW = GroupView(5, (2, 2, 3), {0: 1, 1: 2, 2: 3})


def test_a_read_during_which_the_group_changed_is_done_again(monkeypatch):
    views = iter([VIEW, GroupView(5, (3, 3, 4), {0: 2, 1: 1, 2: 3}),      # read 1: changed
                  VIEW, VIEW])                                           # read 2: same
    reads = iter([{1: {"days": {}}},                      # during the rebalance: user 2 missing
                  {},                                     # (asked again: still missing)
                  {1: {"days": {}}, 2: {"days": {}}}])    # read 2: both
    monkeypatch.setattr(chaos, "group_view", lambda w, cfg: next(views))
    monkeypatch.setattr(chaos, "_ask_states", lambda w, ids: next(reads))
    said = []
    live, view, _ = chaos.stable_states(None, [1, 2], None, said.append)
    assert set(live) == {1, 2} and view == VIEW
    assert any("changed during the states read" in s for s in said)


def test_users_no_worker_had_are_asked_again_within_the_read(monkeypatch):
    asked = []
    answers = iter([{1: {"days": {}}}, {2: {"days": {}}}])

    def ask(w, ids):
        asked.append(list(ids))
        return next(answers)

    monkeypatch.setattr(chaos, "group_view", lambda w, cfg: VIEW)
    monkeypatch.setattr(chaos, "_ask_states", ask)
    live, _, _ = chaos.stable_states(None, [1, 2], None, lambda s: None)
    assert asked == [[1, 2], [2]] and set(live) == {1, 2}


def test_no_stable_group_is_an_error_not_a_verdict(monkeypatch):
    monkeypatch.setattr(chaos, "group_view", lambda w, cfg: None)
    monkeypatch.setattr(chaos.time, "sleep", lambda s: None)
    with pytest.raises(RuntimeError, match="no stable consumer group"):
        chaos.stable_states(None, [1], None, lambda s: None, timeout=0.01)


class _Cfg:
    class kafka:
        partitions = 3

        class topics:
            user_events = "user-events"


class _Workers:
    def url(self, i: int) -> str:
        return f"w{i}"


def _health(gen=5, rebalancing=False, n=1, parts=()):
    return {"status": "ok", "recovery_completed": True, "generation": gen,
            "rebalancing": rebalancing, "rebalances": n,
            "assigned_partitions": [f"user-events:{p}" for p in parts] +
            [f"user-profiles-user-state-changelog:{p}" for p in parts]}


@pytest.mark.parametrize("healths, stable", [
    ({"w1": _health(parts=[0]), "w2": _health(parts=[1]), "w3": _health(parts=[2])}, True),
    ({"w1": _health(parts=[0]), "w2": _health(parts=[1]), "w3": None}, False),   # not ready
    ({"w1": _health(parts=[0]), "w2": _health(parts=[1], rebalancing=True),
      "w3": _health(parts=[2])}, False),                                       # restoring
    ({"w1": _health(parts=[0]), "w2": _health(parts=[1], gen=6),
      "w3": _health(parts=[2])}, False),                                       # two generations
    ({"w1": _health(parts=[0, 1]), "w2": _health(parts=[1]),
      "w3": _health(parts=[2])}, False),                                       # owned twice
    ({"w1": _health(parts=[0]), "w2": _health(parts=[1]), "w3": _health()}, False),  # unowned
])
def test_group_view_is_stable_only_when_one_assignment_covers_every_partition_once(
        monkeypatch, healths, stable):
    monkeypatch.setattr(chaos, "ready", lambda url: healths[url])
    view = chaos.group_view(_Workers(), _Cfg)
    assert (view is not None) == stable
    if stable:
        assert view == GroupView(5, (1, 1, 1), {0: 1, 1: 2, 2: 3})


def test_runs_table_has_every_count_per_seed_and_the_totals():
    ok = ChaosReport(42, 1000, 0, [], users=50, stale_publishes=2, seconds=100)
    bad = ChaosReport(43, 2000, 0, [], users=60, lost_events=891, states_missing=161,
                      seconds=120)
    crashed = ChaosReport(44, 500, 0, [], worker_exits=1, error="a worker ended by itself")
    lines = runs_table([ok, bad, crashed])
    assert lines[0].startswith("| seed | events | users | mismatched |")
    rows = {line.split(" | ")[0].strip("| *"): line for line in lines[2:]}
    assert rows["42"].endswith("| 100 | OK |")
    assert "| 891 |" in rows["43"] and "| 161 |" in rows["43"] and rows["43"].endswith("FAILED |")
    assert "ERROR: a worker ended by itself" in rows["44"]
    assert "| 3,500 | 110 |" in rows["total"] and rows["total"].endswith("| 1 of 3 OK |")
    assert ok.ok and not bad.ok and not crashed.ok
