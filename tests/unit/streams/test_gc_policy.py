"""streams.process.gc_policy: `performance.gc` reaches the collector; the heap is frozen once."""
from __future__ import annotations

import gc

import pytest

from features.config import GcConfig, load_config
from streams.process import gc_policy


@pytest.fixture
def restored_gc(monkeypatch):
    thresholds = gc.get_threshold()
    gc.unfreeze()
    monkeypatch.setattr(gc_policy, "_frozen", False)      # (a process freezes once)
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_thresholds_and_a_single_freeze(restored_gc):
    gc_policy.apply_thresholds(GcConfig(thresholds=(1234, 5, 6)))
    assert gc.get_threshold() == (1234, 5, 6)
    gc_policy.freeze_start_up_heap(GcConfig())
    frozen = gc.get_freeze_count()
    assert frozen > 0
    kept = [[] for _ in range(100)]         # made after the freeze: not frozen by a second call
    gc_policy.freeze_start_up_heap(GcConfig())
    assert gc.get_freeze_count() == frozen and kept


def test_freezing_can_be_turned_off(restored_gc):
    gc_policy.freeze_start_up_heap(GcConfig(freeze_after_start=False))
    assert gc.get_freeze_count() == 0


def test_the_shipped_config_sets_the_measured_policy():
    cfg = load_config("profile_config.yaml")
    assert cfg.performance.gc == GcConfig(thresholds=(10000, 50, 10), freeze_after_start=True)
