"""Detects that the whole process was paused (SIGSTOP, a frozen VM): a daemon thread ticks every
0.1 s; a gap between ticks longer than the group session timeout means the broker stopped hearing
heartbeats and gave this worker's partitions to another one meanwhile. (A merely slow batch does
not open a gap: the thread keeps ticking, and so does the consumer's heartbeat thread.)"""
from __future__ import annotations

import threading
import time

TICK = 0.1


class PauseWatch:
    def __init__(self):
        self._last = time.monotonic()
        self._gaps: list[tuple[float, float]] = []      # (tick time, gap before it)
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="pause-watch", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(TICK)
            now = time.monotonic()
            gap = now - self._last
            self._last = now
            if gap > 1.0:
                with self._lock:
                    self._gaps = [g for g in self._gaps if now - g[0] < 600] + [(now, gap)]

    def longest_pause_since(self, since: float) -> float:
        """The longest pause of the process (seconds) that ended after monotonic time `since`,
        counting one still going on now."""
        now = time.monotonic()
        with self._lock:
            gaps = [g for t, g in self._gaps if t > since]
        return max(gaps + [now - self._last])
