"""`python -m tools.bench.evaluate_bulk`: the columnar evaluation in bulk (issue 25), per user.

Builds --users of the sample generator's users (as tools.bench.columnar does: every event
applied, the profile as of T published), keeps their v3 records and times, per user, CPU time
of the process, best of --repeat, --chunk users a call:

- stack: `Stack.from_states` of decoded states;
- finish (the stream): `evaluate_many(..., with_metrics=False)` at each state's T;
- evaluate_many with metrics (the query API, the quality scan);
- changed_profiles a day later (a scheduled run: most users' windows slide);
- decode (for scale).

`--loop SECONDS` instead runs one of them (--what) over and over, for py-spy.
"""
from __future__ import annotations

import argparse
import gc
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from features import columnar
from features.columnar.evaluate import compiled
from features.columnar.stack import Stack
from features.config import parse_config
from features.events import Event
from features.runtime import FeatureRuntime
from features.state import UserState
from features.state import apply as apply_ref
from tools.data.sample import END_TS, TOPICS, SampleSpec, write_sample


def build(users: int, workdir: Path) -> tuple[FeatureRuntime, list[int], list[bytes]]:
    cfg = parse_config({"mapping_index": str(workdir / "mapping_index.json"),
                        "interest_tags": {"categories": dict(TOPICS)}}, env={})
    cached = workdir / "states.pickle"
    if cached.exists():
        rt = FeatureRuntime.from_config(cfg, workdir / "item_feat_dict.json")
        uids, blobs = pickle.loads(cached.read_bytes())
        return rt, uids, blobs
    write_sample(SampleSpec(users=users, days=30), workdir)
    rt = FeatureRuntime.from_config(cfg, workdir / "item_feat_dict.json")
    events: dict[int, list[Event]] = {}
    for line in (workdir / "events.jsonl").read_bytes().splitlines():
        ev = rt.parser.parse_line(line, END_TS + 86400)
        if isinstance(ev, Event):
            events.setdefault(ev.user_id, []).append(ev)
    eng, cat, rules, tz = rt.engine, rt.catalog, rt.engine.rules, rt.engine.tz
    uids, blobs = [], []
    for u, evs in sorted(events.items()):
        s = UserState()
        for e in evs:
            apply_ref(s, e, cat.categories(e.item_id), rules)
        s.version, s.published_digest, s.published_as_of = 1, eng.evaluate(u, s).digest(), s.T
        uids.append(u)
        blobs.append(columnar.encode(columnar.from_reference(s, tz)))
    cached.write_bytes(pickle.dumps((uids, blobs)))
    return rt, uids, blobs


def cases(rt: FeatureRuntime, uids: list[int], blobs: list[bytes], chunk: int
          ) -> dict[str, Callable[[], Any]]:
    eng, tz = rt.engine, rt.engine.tz
    chunks = [(uids[i:i + chunk], [columnar.decode(b, tz) for b in blobs[i:i + chunk]])
              for i in range(0, len(uids), chunk)]
    later = END_TS + 86400 + 3600
    codes = compiled(eng).codes

    def stack() -> None:
        for _, states in chunks:
            Stack.from_states(states, tz, codes)

    def finish() -> None:
        for u, states in chunks:
            columnar.evaluate_many(eng, u, states, with_metrics=False)

    def with_metrics() -> None:
        for u, states in chunks:
            columnar.evaluate_many(eng, u, states)

    def scheduled() -> None:
        for u, states in chunks:
            columnar.changed_profiles(eng, u, states, [max(later, s.T) for s in states])

    def decode() -> None:
        for b in blobs:
            columnar.decode(b, tz)

    return {"stack": stack, "finish": finish, "with_metrics": with_metrics,
            "scheduled": scheduled, "decode": decode}


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8192)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--loop", type=float, default=0.0)
    ap.add_argument("--what", default="finish")
    ap.add_argument("--keep", type=Path, default=None,
                    help="a folder that keeps the sample and the records between runs")
    args = ap.parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        rt, uids, blobs = build(args.users, args.keep)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
        try:
            rt, uids, blobs = build(args.users, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    todo = cases(rt, uids, blobs, args.chunk)
    n = len(uids)
    if args.loop:
        fn = todo[args.what]
        end = time.monotonic() + args.loop
        while time.monotonic() < end:
            fn()
        return
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"{n:,} users, chunks of {args.chunk:,}, best of {args.repeat}; load {load}")
    for name, fn in todo.items():
        print(f"  {name:14s} {best(fn, args.repeat) / n * 1e6:7.2f} µs per user", flush=True)


if __name__ == "__main__":
    main()
