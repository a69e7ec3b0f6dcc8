"""What every batch path shares (the local and Spark engines, the reference batch, the CLI's
producer): the run's report, the dead-letter file beside OUT, input lines as events (TAAC
sequence lines expanded) and progress on the terminal."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

import orjson


@dataclass
class BatchReport:
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    after_as_of: int = 0
    rejected: Counter = field(default_factory=Counter)
    users: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {"events": self.events, "applied": self.applied,
                "duplicates": self.duplicates, "after_as_of": self.after_as_of,
                "rejected": dict(sorted(self.rejected.items())), "users": self.users,
                "seconds": round(self.seconds, 3),
                "events_per_second": round(self.events_per_second)}


def dlq_path(out: Path) -> Path:
    name = out.name.removesuffix(".jsonl")
    return out.with_name(f"{name}.dlq.jsonl")


def iter_events(lines: Iterator[bytes], start: int = 1) -> Iterator[tuple[int, bytes | dict]]:
    """(line number, raw bytes or decoded event dict); `start` numbers the first line. A
    TAAC-style seq.jsonl line — a JSON array of [user_id, item_id, user_feat, item_feat,
    action_type, timestamp] rows — expands into one event per row that names an item (rows
    without an item carry user features only)."""
    for lineno, line in enumerate(lines, start):
        s = line.strip()
        if not s:
            continue
        if s[:1] == b"[":
            try:
                rows = orjson.loads(s)
            except orjson.JSONDecodeError:
                yield lineno, s
                continue
            if not rows or not all(isinstance(r, list) and len(r) == 6 for r in rows):
                yield lineno, s                 # not a sequence line: judged as one event
                continue
            for row in rows:
                if row[1] is not None:
                    yield lineno, {"user_id": row[0], "item_id": row[1],
                                   "action_type": row[4], "timestamp": row[5]}
            continue
        yield lineno, s


class Progress:
    def __init__(self, stream: IO | None, every: float = 1.0, label: str = "batch"):
        self.stream, self.every, self.label = stream, every, label
        self.start = self.last = time.monotonic()

    def tick(self, n: int, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.last = now
            rate = n / max(now - self.start, 1e-9)
            tty = getattr(self.stream, "isatty", lambda: False)()
            # on a terminal one line updates in place; in a log file each tick is its own line
            prefix = "\r" if tty else ""
            print(f"{prefix}{self.label}: {n:,} events read ({rate:,.0f}/s)",
                  end="\n" if force or not tty else "", file=self.stream, flush=True)
