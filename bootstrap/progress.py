"""A bootstrap's progress on stderr: a line per tick of a phase (state writes, publishes, the
build's shares), with what is done, the rate and the time left."""
from __future__ import annotations

import time
from typing import IO


class ProgressLines:
    """One line per step of a phase on stderr (at most one a second): done, rate, time left."""

    def __init__(self, out: IO | None):
        self.out = out

    def phase(self, name: str, total: int | None, unit: str) -> "Phase":
        return Phase(self, name, total, unit)

    def say(self, line: str) -> None:
        if self.out is not None:
            print(line, file=self.out, flush=True)


class Phase:
    def __init__(self, progress: ProgressLines, name: str, total: int | None, unit: str):
        self.p, self.name, self.total, self.unit = progress, name, total, unit
        self.t0 = self.last = time.monotonic()

    def tick(self, done: int, force: bool = False, extra: str = "") -> None:
        now = time.monotonic()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        left = ""
        if self.total:
            left = f" of {self.total:,}"
            if rate > 0 and done < self.total:
                left += f", {(self.total - done) / rate:,.0f} s left"
        self.p.say(f"bootstrap {self.name}: {done:,}{left} {self.unit} ({rate:,.0f}/s){extra}")
