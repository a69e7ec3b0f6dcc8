"""The batch path's 4-million-event input (issue 25) and its timing.

    python -m tools.bench.batch4m build --sample DIR --out DIR [--copies 10]
    python -m tools.bench.batch4m time --dir DIR [--runs 3] [--workers 1 --workers 2]

`build` writes DIR/events.jsonl: `--copies` copies of the sample's events.jsonl, copy k with
user ids (and the `u<user>-<seq>` event ids) shifted by k x the sample's largest user id so the
users are distinct, the malformed lines kept as they are; and DIR/events.parquet: the valid
events of the same lines (nulls where a field is absent), row groups of 131,072 rows.
`time` runs `profiles batch --engine local` on each, best of `--runs`, and prints wall time,
CPU time of the process and its workers (getrusage) and the load average.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson

FIELDS = ("user_id", "item_id", "timestamp", "action_type", "event_type", "dwell_time",
          "event_id")


def _shift(line: bytes, by: int) -> tuple[bytes, dict | None]:
    """The line with its user id shifted (and its event id, if it names the user); the event
    object when the line is a valid-looking event of the generator, else None (kept as is)."""
    try:
        ev = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line, None
    if not isinstance(ev, dict) or type(ev.get("user_id")) is not int or ev["user_id"] < 1 \
            or "event_id" not in ev:
        return line, None          # the generator's bad records (no event id) stay as they are
    uid = ev["user_id"] + by
    eid = ev["event_id"]
    if isinstance(eid, str) and eid.startswith("u"):
        eid = f"u{uid}-{eid.split('-', 1)[1]}"
    ev = {k: (uid if k == "user_id" else eid if k == "event_id" else v) for k, v in ev.items()}
    return orjson.dumps(ev), ev


def build(sample: Path, out: Path, copies: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = (sample / "events.jsonl").read_bytes().split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    top = max(ev["user_id"] for ev in (_shift(x, 0)[1] for x in lines) if ev is not None)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample / "item_feat_dict.json", out / "item_feat_dict.json")
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("timestamp", pa.int64()), ("action_type", pa.int64()),
                        ("event_type", pa.string()), ("dwell_time", pa.float64()),
                        ("event_id", pa.string())])
    with open(out / "events.jsonl", "wb") as f, \
            pq.ParquetWriter(out / "events.parquet", schema) as pw:
        for k in range(copies):
            text, cols = [], {c: [] for c in FIELDS}
            for line in lines:
                shifted, ev = _shift(line, k * top)
                text.append(shifted)
                if ev is not None and ev.get("event_id") is not None:
                    for c in FIELDS:
                        cols[c].append(ev.get(c))
            f.write(b"\n".join(text) + b"\n")
            pw.write_table(pa.table(cols, schema=schema), row_group_size=131072)
    print(f"{copies} copies of {len(lines)} lines, user ids shifted by {top} a copy -> {out}")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_runs(d: Path, runs: int, workers: list[int], formats: list[str]) -> None:
    for fmt in formats:
        events = d / f"events.{fmt}"
        for w in workers:
            best_wall = best_cpu = float("inf")
            n = 0
            loads = []
            for _ in range(runs):
                out = d / f"out-{fmt}-{w}.jsonl"
                cmd = [sys.executable, "-m", "deploy", "batch", "--engine", "local", "--quiet",
                       "--items", str(d / "item_feat_dict.json"), "--events", str(events),
                       "--out", str(out), "--workers", str(w)]
                loads.append(os.getloadavg()[0])
                c0, t0 = _children_cpu(), time.perf_counter()
                res = subprocess.run(cmd, capture_output=True, check=True)
                wall, cpu = time.perf_counter() - t0, _children_cpu() - c0
                loads.append(os.getloadavg()[0])
                best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
                n = orjson.loads(res.stdout.splitlines()[0])["events"]
            print(f"{fmt} workers={w}: {n:,} events, best wall {best_wall:.2f} s "
                  f"({n / best_wall:,.0f} events/s), best CPU {best_cpu:.2f} s "
                  f"({best_cpu / n * 1e6:.2f} us/event), load {min(loads):.1f}-{max(loads):.1f}",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--sample", type=Path, required=True)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--copies", type=int, default=10)
    t = sub.add_parser("time")
    t.add_argument("--dir", type=Path, required=True)
    t.add_argument("--runs", type=int, default=3)
    t.add_argument("--workers", type=int, action="append")
    t.add_argument("--format", action="append", choices=["jsonl", "parquet"])
    a = ap.parse_args()
    if a.cmd == "build":
        build(a.sample, a.out, a.copies)
    else:
        time_runs(a.dir, a.runs, a.workers or [1, 2], a.format or ["jsonl", "parquet"])


if __name__ == "__main__":
    main()
