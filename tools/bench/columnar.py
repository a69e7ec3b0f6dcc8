"""`python -m tools.bench.columnar`: the columnar core (features/columnar) against the
reference code, per user, on the sample generator's users (~80 events in 30 days on average).

Per user, the best of --repeat runs, reference and new side by side in the same process:
decode, apply of 1 and of 3 events (the user's last ones, to a state holding all the others),
encode, evaluation and the closed-day aggregates when --together users are evaluated in one
call; the encoded size and the memory of a decoded state (tracemalloc); and a scheduled run's
cost per user over --scheduled-users states read from a RocksDB (read, decode, evaluate,
digest, next change day) in chunks of --chunk users. No timed assertions: figures only.
"""
from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
import tracemalloc
from itertools import islice
from pathlib import Path
from typing import Any, Callable

import numpy as np

from features import columnar
from features.columnar.schedule import next_change_days
from features.config import parse_config
from features.encoding import decode as decode_ref
from features.encoding import encode as encode_ref
from features.events import Event, day_of
from features.runtime import FeatureRuntime
from features.schedule import next_change_day
from features.state import UserState
from features.state import apply as apply_ref
from features.update import day_end
from streams.state.rocksdb import open_store
from streams.state.table_keys import iter_users, user_key
from tools.data.sample import END_TS, TOPICS, SampleSpec, write_sample


def _best(fn: Callable[..., Any], n: int, repeat: int,
          setup: Callable[[], Any] | None = None) -> float:
    """Best CPU time of `repeat` runs, in µs per unit (n units per run). CPU time of this
    process, not wall time: the machine is shared, and waiting for a core is not our cost.
    `setup`'s result (made outside the timing) is passed to fn."""
    times = []
    for _ in range(repeat):
        arg = setup() if setup is not None else None
        gc.collect()
        t0 = time.process_time()
        fn() if setup is None else fn(arg)
        times.append(time.process_time() - t0)
    return min(times) / n * 1e6


def _memory_per_item(make: Callable[[], list], n: int) -> float:
    gc.collect()
    tracemalloc.start()
    kept = make()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    return current / n


def _runtime(workdir: Path, users: int, days: int) -> tuple[FeatureRuntime, Path]:
    write_sample(SampleSpec(users=users, days=days), workdir)
    cfg = parse_config({"mapping_index": str(workdir / "mapping_index.json"),
                        "interest_tags": {"categories": {t: f for t, f in TOPICS.items()}}},
                       env={})
    return FeatureRuntime.from_config(cfg, workdir / "item_feat_dict.json"), workdir


def _events_by_user(rt: FeatureRuntime, path: Path) -> dict[int, list[Event]]:
    out: dict[int, list[Event]] = {}
    for line in path.read_bytes().splitlines():
        ev = rt.parser.parse_line(line, END_TS + 86400)
        if isinstance(ev, Event):
            out.setdefault(ev.user_id, []).append(ev)
    return out


def per_user(rt: FeatureRuntime, events: dict[int, list[Event]], repeat: int,
             together: int, say: Callable[[str], None]) -> list[tuple[str, float, float]]:
    eng, cat, rules, tz = rt.engine, rt.catalog, rt.engine.rules, rt.engine.tz
    rows: list[tuple[str, float, float]] = []
    for k in (1, 3):
        users = [u for u, evs in events.items() if len(evs) > k]
        tails = {u: events[u][-k:] for u in users}
        refb, v3 = {}, {}
        for u in users:
            s = UserState()
            for e in events[u][:-k]:
                apply_ref(s, e, cat.categories(e.item_id), rules)
            refb[u] = encode_ref(s, tz)
            v3[u] = columnar.encode(columnar.from_reference(s, tz))
        n = len(users)
        if k == 1:
            rows.append(("decode", _best(lambda: [decode_ref(refb[u], tz) for u in users], n,
                                         repeat),
                         _best(lambda: [columnar.decode(v3[u], tz) for u in users], n, repeat)))

        def ref_apply(states: list) -> None:
            for u, s in zip(users, states):
                for e in tails[u]:
                    apply_ref(s, e, cat.categories(e.item_id), rules)

        def new_apply(states: list) -> None:
            for u, s in zip(users, states):
                for e in tails[u]:
                    columnar.apply(s, e, cat.categories(e.item_id), rules)

        rows.append((f"apply {k} event{'s' if k > 1 else ''}",
                     _best(ref_apply, n, repeat, lambda: [decode_ref(refb[u], tz) for u in users]),
                     _best(new_apply, n, repeat,
                           lambda: [columnar.decode(v3[u], tz) for u in users])))
        if k == 1:
            refs = {u: decode_ref(refb[u], tz) for u in users}
            news = {u: columnar.decode(v3[u], tz) for u in users}
            for u in users:
                for e in tails[u]:
                    apply_ref(refs[u], e, cat.categories(e.item_id), rules)
                    columnar.apply(news[u], e, cat.categories(e.item_id), rules)
            rows.append(("encode", _best(lambda: [encode_ref(refs[u], tz) for u in users], n,
                                         repeat),
                         _best(lambda: [columnar.encode(news[u]) for u in users], n, repeat)))
            group = users[:together]
            g = len(group)
            rows.append((f"evaluate ({g} users in one call)",
                         _best(lambda: [eng.evaluate(u, refs[u]) for u in group], g, repeat),
                         _best(lambda: columnar.evaluate_many(eng, group, [news[u] for u in group]),
                               g, repeat)))
            windows = rt.cfg.behavior_preferences.time_windows
            ends = {u: day_end(day_of(refs[u].T, tz), tz) for u in group}
            rows.append((f"closed-day aggregates ({g} users in one call)",
                         _best(lambda: [eng.metrics_all(refs[u], ends[u], windows)
                                        for u in group], g, repeat),
                         _best(lambda: columnar.metrics_many(
                             eng, [news[u] for u in group], [ends[u] for u in group], windows),
                             g, repeat)))
            rows.append(("decode + apply 1 + encode + evaluate (sum)",
                         sum(r[1] for r in rows[-5:-1]), sum(r[2] for r in rows[-5:-1])))
            # sizes
            sizes3 = np.array([len(columnar.encode(news[u])) for u in users])
            n_ev = np.array([sum(b.total for b in refs[u].days.values()) for u in users])
            typical = (n_ev >= 90) & (n_ev <= 110)
            say(f"encoded bytes (format 4), median over {n} users: {np.median(sizes3):,.0f}; "
                f"users with 90-110 events ({typical.sum()}): {sizes3[typical].mean():,.0f}; "
                f"p90 {np.percentile(sizes3, 90):,.0f}")
            sel = [u for u, t in zip(users, typical) if t] or users
            mem_ref = _memory_per_item(lambda: [decode_ref(refb[u], tz) for u in sel], len(sel))
            blobs = [bytes(v3[u]) for u in sel]

            def decoded_and_changed() -> list:
                out = []
                for b in blobs:
                    s = columnar.decode(b, tz)
                    s.writable()        # after an apply the state owns its bytes
                    out.append(s)
                return out

            mem_new = _memory_per_item(decoded_and_changed, len(sel))
            mem_view = _memory_per_item(lambda: [columnar.decode(b, tz) for b in blobs],
                                        len(sel))
            say(f"decoded state in memory (tracemalloc, users with 90-110 events): reference "
                f"{mem_ref:,.0f} B; v3 {mem_new:,.0f} B once changed (owns a copy of its "
                f"record), {mem_view:,.0f} B as views over the record it was read from "
                f"(the cache keeps that record too: + {np.mean([len(b) for b in blobs]):,.0f} B)")
    return rows


def scheduled(rt: FeatureRuntime, events: dict[int, list[Event]], n_users: int, chunk: int,
              workdir: Path, say: Callable[[str], None]) -> None:
    """A daily --full run's per-user work over n_users states in a RocksDB."""
    eng, cat, rules, tz = rt.engine, rt.catalog, rt.engine.rules, rt.engine.tz
    pool_ref, pool = [], []
    for u, evs in events.items():
        s = UserState()
        for e in evs:
            apply_ref(s, e, cat.categories(e.item_id), rules)
        # as the stream left it: the profile as of T published
        s.version, s.published_digest, s.published_as_of = 1, eng.evaluate(u, s).digest(), s.T
        pool_ref.append(encode_ref(s, tz))
        pool.append(columnar.encode(columnar.from_reference(s, tz)))
    path = workdir / "states.db"
    db = open_store(path)
    t0 = time.process_time()
    for start in range(0, n_users, 50_000):
        db.put_many((user_key(uid), pool[uid % len(pool)])
                    for uid in range(start + 1, min(n_users, start + 50_000) + 1))
    say(f"scheduled run: {n_users:,} v3 states written to RocksDB in "
        f"{time.process_time() - t0:.1f} s (CPU)")
    stream_time = END_TS + 86400 + 3600        # a day after the sample: every window slides
    eval_day = day_of(stream_time, tz)
    t = {"read": 0.0, "decode": 0.0, "evaluate and compare": 0.0, "next change": 0.0}
    changed = 0
    users = iter_users(db)
    done = 0
    while True:
        t0 = time.process_time()
        keys: list[bytes] = []
        blobs: list[bytes] = []
        for key, blob in islice(users, chunk):
            keys.append(key)
            blobs.append(blob)
        if not keys:
            break
        t1 = time.process_time()
        states = [columnar.decode(b, tz) for b in blobs]
        t2 = time.process_time()
        uids = [int(k) for k in keys]
        profiles = columnar.changed_profiles(eng, uids, states,
                                             [max(stream_time, s.T) for s in states])
        t3 = time.process_time()
        next_change_days(states, [eval_day] * len(states), eng.windows, tz)
        t4 = time.process_time()
        changed += sum(p is not None for p in profiles)
        for name, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[name] += dt
        done += len(keys)
    total = sum(t.values())
    say(f"scheduled run over {done:,} users, chunks of {chunk:,}: "
        + ", ".join(f"{k} {v / done * 1e6:.1f}" for k, v in t.items())
        + f" µs per user; total {total / done * 1e6:.1f} µs per user -> "
        f"{total / done * 1e6:.0f} s per 1,000,000 users ({changed:,} changed)")
    # the same work with the reference code, on a slice
    n_ref = min(5000, len(pool_ref) * 5)
    t0 = time.process_time()
    for uid in range(1, n_ref + 1):
        s = decode_ref(pool_ref[uid % len(pool_ref)], tz, event_ids=False)
        p = eng.evaluate(uid, s, max(stream_time, s.T))
        p.digest()
        next_change_day(s, eval_day, eng.windows)
    dt = time.process_time() - t0
    say(f"reference, same work without the read, {n_ref:,} users: {dt / n_ref * 1e6:.1f} µs "
        f"per user -> {dt / n_ref * 1e6:.0f} s per 1,000,000 users")
    db.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--together", type=int, default=800)
    ap.add_argument("--scheduled-users", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=2048)
    args = ap.parse_args(argv)

    def say(msg: str) -> None:
        print(msg, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="bench-columnar-"))
    try:
        rt, _ = _runtime(workdir, args.users, args.days)
        events = _events_by_user(rt, workdir / "events.jsonl")
        say(f"sample: {args.users:,} users, {args.days} days, "
            f"{sum(map(len, events.values())):,} valid events; python {sys.version.split()[0]}")
        rows = per_user(rt, events, args.repeat, args.together, say)
        say("")
        say("| per user | reference µs | columnar µs | ratio |")
        say("|---|---:|---:|---:|")
        for name, ref, new in rows:
            say(f"| {name} | {ref:,.1f} | {new:,.2f} | {ref / new if new > 0 else 0:,.1f}× |")
        say("")
        if args.scheduled_users:
            scheduled(rt, events, args.scheduled_users, args.chunk, workdir, say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
