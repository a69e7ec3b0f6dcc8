"""The chaos run's seeded schedule and its per-seed table (no broker)."""
from __future__ import annotations

from collections import Counter

from deploy.chaos import ChaosReport, runs_table
from deploy.chaos_schedule import BROKER_FAULTS, FAULT_KINDS, fault_schedule


def test_every_fault_kind_once_and_kills_as_asked():
    plan = fault_schedule(42, 46.0, kills=5)
    kinds = Counter(f.kind for f in plan)
    assert kinds == Counter({"sigkill": 5, **{k: 1 for k in FAULT_KINDS if k != "sigkill"}})
    assert set(BROKER_FAULTS) <= set(kinds)
    assert [f.at for f in plan] == sorted(f.at for f in plan)
    assert all(2.0 <= f.at <= 46.0 for f in plan)
    for f in plan:
        targeted = f.kind in ("sigkill", "wipe", "sigstop")
        assert (f.worker in (1, 2, 3)) if targeted else f.worker is None


def test_schedule_is_a_function_of_the_seed():
    assert fault_schedule(42, 46.0) == fault_schedule(42, 46.0)
    assert fault_schedule(42, 46.0) != fault_schedule(43, 46.0)


def test_skip_leaves_kinds_out():
    plan = fault_schedule(7, 30.0, kills=2, skip=("latency", "cut", "broker-pause"))
    assert not {f.kind for f in plan} & set(BROKER_FAULTS)
    assert sum(f.kind == "sigkill" for f in plan) == 2


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
