"""The chaos run's seeded fault schedule (tools/chaos/run.py runs it): which faults, when, on
which worker. Pure, so the CLI can list the kinds without importing the run."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Fault:
    at: float
    kind: str                   # one of FAULT_KINDS
    worker: int | None = None

    def describe(self) -> str:
        w = f" worker {self.worker}" if self.worker else ""
        return f"t+{self.at:5.1f}s {self.kind}{w}"


WORKER_FAULTS = ("sigkill", "wipe", "sigstop", "reassign", "hostile")
BROKER_FAULTS = ("broker-pause", "broker-kill", "broker-restart", "cut", "latency")
FAULT_KINDS = WORKER_FAULTS + BROKER_FAULTS
BROKER_PAUSE = 20.0             # seconds the broker is stopped
LATENCY, LATENCY_FOR = 0.2, 30.0    # seconds added to every forwarded chunk, and for how long


def fault_schedule(seed: int, duration: float, kills: int = 5, workers: int = 3,
                   skip: tuple[str, ...] = ()) -> list[Fault]:
    rng = random.Random(seed)
    kinds = [k for k in ["sigkill"] * kills + list(FAULT_KINDS[1:]) if k not in skip]
    slots = sorted(rng.uniform(2.0, duration) for _ in kinds)
    rng.shuffle(kinds)
    return [Fault(round(t, 1), k, rng.randrange(1, workers + 1)
                  if k in ("sigkill", "wipe", "sigstop") else None)
            for t, k in zip(slots, kinds)]
