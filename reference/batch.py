"""The reference batch path: events JSONL (file order = log order) -> one §7 record per user,
one process, the per-user reference code (features.state.apply, FeatureEngine.evaluate).

It is the oracle the engines (offline/), the stream (tools/verify.py, `profiles chaos`' verdict)
and the benchmarks' baseline are held to; no path serves its output. Bad lines go to OUT's
dead-letter file with their reason and never stop the run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from features.config import ProfileConfig
from features.events import Rejection
from features.runtime import FeatureRuntime
from features.state import APPLIED, DUPLICATE, UserState, apply
from offline.batch_io import BatchReport, Progress, dlq_path, iter_events


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
