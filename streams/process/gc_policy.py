"""The worker's garbage-collection policy (`performance.gc`).

The stream allocates a few container objects per event (parsed values, events, batch columns)
that reference counting frees at once; Python's default thresholds still ran a collection every
700 net allocations, and a full one (the whole heap: Faust, aiokafka, the catalog, the state
cache) every second or so, 100-140 ms each: about a fifth of a loaded worker's CPU, and its
longest pauses (BENCHMARKS.md, "The fast path, fourth stop"). Higher thresholds keep collecting
cycles, less often; freezing the heap once the agent starts leaves what start-up built (it lives
as long as the process) out of every later collection.
"""
from __future__ import annotations

import gc
import logging

from features.config import GcConfig

log = logging.getLogger(__name__)


def apply_thresholds(cfg: GcConfig) -> None:
    gc.set_threshold(*cfg.thresholds)


_frozen = False


def freeze_start_up_heap(cfg: GcConfig) -> None:
    """Once the worker has started (the agent's first run; once per process): every object
    alive now moves to the permanent generation. Objects created later are collected as usual."""
    global _frozen
    if cfg.freeze_after_start and not _frozen:
        _frozen = True
        gc.freeze()
        log.info("gc: %d start-up objects frozen; thresholds %s", gc.get_freeze_count(),
                 gc.get_threshold())
