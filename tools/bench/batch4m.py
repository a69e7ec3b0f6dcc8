"""The batch path's 4-million-event input (issue 25) and its timing.

    python -m tools.bench.batch4m build --sample DIR --out DIR [--copies 10]
    python -m tools.bench.batch4m time --dir DIR [--runs 3] [--workers 1 --workers 2]

`build` writes DIR/events.jsonl and DIR/events.parquet as `make bench` makes its scale rows'
input (tools.bench.scale.scaled_copies: copies under distinct user ids, the malformed lines kept,
the events of the usual shape as Parquet rows).
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

from tools.bench.scale import _shifted, scaled_copies


def build(sample: Path, out: Path, copies: int) -> None:
    """The sample's users are numbered 1..N: copies shift by a power of ten above N."""
    lines = (sample / "events.jsonl").read_bytes().splitlines()
    users = max(row["user_id"] for row in (_shifted(x, 0)[1] for x in lines) if row is not None)
    scaled_copies(sample, out, users, copies)
    shutil.copy(sample / "item_feat_dict.json", out / "item_feat_dict.json")


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
