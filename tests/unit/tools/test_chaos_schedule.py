"""The chaos run's seeded fault schedule (no broker)."""
from __future__ import annotations

from collections import Counter

from tools.chaos.faults import BROKER_FAULTS, FAULT_KINDS, fault_schedule


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
    plan = fault_schedule(7, 30.0, kills=2, skip=BROKER_FAULTS)
    assert not {f.kind for f in plan} & set(BROKER_FAULTS)
    assert sum(f.kind == "sigkill" for f in plan) == 2
