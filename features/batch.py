"""The offline batch path: events JSONL (file order = log order) -> one §7 record per user.

It calls the same parser, state and evaluation as the stream, so both give the same arrays.
Bad lines go to OUT's dead-letter file with their reason and never stop the run.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from features.config import ProfileConfig
from features.events import Rejection
from features.runtime import FeatureRuntime
from features.state import APPLIED, DUPLICATE, UserState, apply


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


def build_states(rt: FeatureRuntime, lines: Iterator[bytes], report: BatchReport,
                 dlq: IO[bytes] | None = None, as_of: int | None = None,
                 progress: Progress | None = None, now: float | None = None
                 ) -> dict[int, UserState]:
    """Apply every valid event in log order to per-user states."""
    parser, catalog, rules = rt.parser, rt.catalog, rt.engine.rules
    now = time.time() if now is None else now
    states: dict[int, UserState] = {}
    for lineno, raw in iter_events(lines):
        report.events += 1
        if isinstance(raw, dict):
            ev = parser.check_line(raw, now)
        else:
            ev = parser.parse_line(raw, now)
        if type(ev) is Rejection:
            _reject(report, dlq, ev.reason, ev.message, lineno, raw)
            continue
        if as_of is not None and ev.ts > as_of:
            report.after_as_of += 1
            continue
        st = states.get(ev.user_id)
        if st is None:
            st = states[ev.user_id] = UserState()
        outcome = apply(st, ev, catalog.categories(ev.item_id), rules)
        if outcome == APPLIED:
            report.applied += 1
        elif outcome == DUPLICATE:
            report.duplicates += 1
        else:
            _reject(report, dlq, outcome, f"day of timestamp {ev.ts} is before the user's "
                    f"30-day window (user T {st.T})", lineno, raw)
        if progress and report.events % 65536 == 0:
            progress.tick(report.events)
    return states


def _reject(report: BatchReport, dlq: IO[bytes] | None, reason: str, message: str, lineno: int,
            raw: bytes | dict[str, Any]) -> None:
    report.rejected[reason] += 1
    if dlq is not None:
        if isinstance(raw, dict):
            raw = orjson.dumps(raw)
        rec = {"reason": reason, "message": message, "line": lineno,
               "original": raw.decode("utf-8", "backslashreplace")}
        dlq.write(orjson.dumps(rec) + b"\n")


def run_batch(cfg: ProfileConfig, items: str | Path | None, events: str | Path, out: str | Path,
              as_of: int | None = None, progress_stream: IO | None = sys.stderr,
              trigger: str | None = None) -> BatchReport:
    t0 = time.perf_counter()
    out = Path(out)
    rt = FeatureRuntime.from_config(cfg, items)
    report = BatchReport()
    progress = Progress(progress_stream)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(events, "rb") as src, open(dlq_path(out), "wb") as dlq:
        states = build_states(rt, src, report, dlq, as_of, progress)
    progress.tick(report.events, force=True)
    trigger = trigger or ("event" if as_of is None else "weekly")
    updated_at = time.time()
    with open(out, "wb") as f:
        for uid in sorted(states):
            st = states[uid]
            if st.empty:
                continue
            T = st.T if as_of is None else max(as_of, st.T)
            rec = rt.engine.evaluate(uid, st, T).to_record(0, trigger, updated_at)
            f.write(orjson.dumps(rec) + b"\n")
            report.users += 1
    report.seconds = time.perf_counter() - t0
    return report
