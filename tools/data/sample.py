"""Deterministic, realistic sample data: an item catalog and a user event log.

Zipf item popularity, per-user topic affinities, sessions separated by gaps, a day/night rhythm,
log-normal dwell times, and the awkward cases a real log has: late (out-of-order) events, events
too late for the 30-day window, re-sent duplicates and a few bad records.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

# Topic -> the item feature ids its items carry (values 1..9); matches profile_config.yaml.
TOPICS = {
    "entertainment": [100, 101, 102],
    "technology": [111, 112, 113],
    "sports": [120, 121],
    "fashion": [130, 131],
    "food": [140, 141],
    "travel": [150, 151],
    "finance": [160, 161],
    "gaming": [170, 171],
}
END_TS = 1_764_547_200          # 2025-12-01 00:00 UTC: the sample's last day ends here
HOUR_WEIGHTS = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2, 2, 2, 2.2, 2.5, 2.3, 2, 2,
                         2.1, 2.4, 2.8, 3.2, 3.5, 3.2, 2.5, 1.6])
BAD_RECORDS = [
    b'{"user_id": 1, "item_id": 2, "timestamp": ',                     # malformed_json
    b'[1, 2, 3]',                                                        # not_an_object
    b'{"item_id": 5, "timestamp": 1764000000, "action_type": 1}',       # missing_field
    b'{"user_id": "x", "item_id": 5, "timestamp": 1764000000, "action_type": 1}',  # bad_type
    b'{"user_id": -3, "item_id": 5, "timestamp": 1764000000, "action_type": 1}',   # out_of_range
    b'{"user_id": 7, "item_id": 5, "timestamp": 1764000000, "action_type": 9}',    # unknown_action
    b'{"user_id": 7, "item_id": 5, "timestamp": 99999999999999, "action_type": 1}',  # future
]


@dataclass(frozen=True)
class SampleSpec:
    users: int = 1000
    days: int = 30
    items: int = 5000
    seed: int = 7
    bad_rate: float = 0.001
    duplicate_rate: float = 0.01
    late_rate: float = 0.02
    activity: float = 1.0       # scales how often a user is active (1.0: ~2.6 events a day)


def generate_items(spec: SampleSpec, rng: np.random.Generator) -> dict[int, dict[str, int]]:
    names = list(TOPICS)
    items = {}
    for item_id in range(1, spec.items + 1):
        topic = names[int(rng.integers(len(names)))]
        fids = TOPICS[topic]
        chosen = rng.choice(fids, size=int(rng.integers(1, len(fids) + 1)), replace=False)
        feats = {str(int(f)): int(rng.integers(1, 10)) for f in chosen}
        if rng.random() < 0.2:                       # some items span two topics
            other = TOPICS[names[int(rng.integers(len(names)))]]
            feats[str(other[0])] = int(rng.integers(1, 10))
        items[item_id] = feats
    return items


def _topic_items(items: dict[int, dict[str, int]]) -> dict[str, np.ndarray]:
    by_topic = {}
    for topic, fids in TOPICS.items():
        keys = {str(f) for f in fids}
        by_topic[topic] = np.array(sorted(i for i, f in items.items() if keys & f.keys()))
    return by_topic


def _cdf(p: np.ndarray | list[float]) -> list[float]:
    """The cumulative weights `Generator.choice(n, p=p)` searches, as it computes them."""
    cdf = np.asarray(p, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    return cdf.tolist()


def _choice(rng: np.random.Generator, cdf: list[float]) -> int:
    """`rng.choice(len(cdf), p=...)` with the same draw and the same result (one `random()`,
    searched on the right), without its per-call checks of p: the sample's events make
    hundreds of thousands of these."""
    return bisect_right(cdf, rng.random())


def generate_events(spec: SampleSpec, items: dict[int, dict[str, int]],
                    rng: np.random.Generator) -> list[bytes]:
    """Event lines in log order (by time, with late ones displaced and extras mixed in)."""
    by_topic = _topic_items(items)
    names = list(TOPICS)
    start_day = END_TS // 86400 - spec.days
    hours_cdf = _cdf(HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    action_cdf = _cdf([0.7, 0.25, 0.05])
    pools = {topic: (pool.tolist(), len(pool)) for topic, pool in by_topic.items()}
    rows: list[tuple[float, bytes]] = []    # (log position, line)
    for user_id in range(1, spec.users + 1):
        n_topics = int(rng.integers(1, 4))
        topics = rng.choice(len(names), size=n_topics, replace=False)
        affinity = _cdf(rng.dirichlet(np.ones(n_topics)))
        p_active = float(np.clip(rng.beta(1.2, 2.0) * spec.activity, 0.03 * spec.activity, 0.95))
        sessions_per_day = 1 + rng.poisson(0.8)
        seq = 0
        for day in range(start_day, start_day + spec.days):
            if rng.random() > p_active:
                continue
            for _ in range(int(rng.integers(1, sessions_per_day + 1))):
                t = day * 86400 + _choice(rng, hours_cdf) * 3600 + int(rng.integers(3600))
                n_ev = 1 + int(rng.geometric(0.25))
                for _ in range(n_ev):
                    topic = names[topics[_choice(rng, affinity)]]
                    ids, n_ids = pools[topic]
                    item = ids[min(int(rng.zipf(1.3)), n_ids) - 1]     # Zipf popularity by rank
                    action = _choice(rng, action_cdf)
                    ev = {"user_id": user_id, "item_id": item, "timestamp": t,
                          "action_type": action, "event_id": f"u{user_id}-{seq}"}
                    if action > 0:
                        ev["dwell_time"] = round(float(rng.lognormal(3.5, 1.0)), 3)
                    if rng.random() < 0.1:       # some producers send event_type instead
                        del ev["action_type"]
                        ev["event_type"] = ("view", "click", "purchase")[action]
                    line = orjson.dumps(ev)
                    pos = float(t)
                    if rng.random() < spec.late_rate:
                        pos += float(rng.integers(60, 6 * 3600))       # arrives late
                    rows.append((pos, line))
                    if rng.random() < spec.duplicate_rate:           # re-sent later
                        rows.append((pos + float(rng.integers(1, 600)), line))
                    seq += 1
                    t += int(rng.integers(5, 400))
    if spec.days > 30:
        # A few events that arrive after their day has left the user's 30-day window.
        for user_id in rng.choice(spec.users, size=max(1, spec.users // 200)) + 1:
            old = (start_day + 1) * 86400 + 3600
            ev = {"user_id": int(user_id), "item_id": 1, "timestamp": old, "action_type": 1,
                  "event_id": f"late-{int(user_id)}"}
            rows.append((float(END_TS), orjson.dumps(ev)))
    rows.sort(key=lambda r: r[0])
    lines = [line for _, line in rows]
    n_bad = int(len(lines) * spec.bad_rate)
    for j in range(n_bad):
        pos = int(rng.integers(len(lines) + 1))
        lines.insert(pos, BAD_RECORDS[j % len(BAD_RECORDS)])
    return lines


def write_sample(spec: SampleSpec, out_dir: str | Path) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    items = generate_items(spec, rng)
    (out / "item_feat_dict.json").write_bytes(
        orjson.dumps({str(k): v for k, v in items.items()}))
    lines = generate_events(spec, items, rng)
    with open(out / "events.jsonl", "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    return {"items": len(items), "events": len(lines), "users": spec.users, "days": spec.days,
            "dir": str(out)}


def write_click_events(path: Path, users: range, base_ts: int, per_user: int) -> Path:
    """`per_user` click events per user, ten minutes apart, on items 100-149: a small stream
    whose every event is valid (the tests' and tools.bench.fencing's)."""
    path.write_bytes(b"".join(
        orjson.dumps({"user_id": u, "item_id": 100 + (u * 7 + i) % 50,
                      "timestamp": base_ts + i * 600 + u, "event_type": "click",
                      "event_id": f"{base_ts}-{u}-{i}"}) + b"\n"
        for u in users for i in range(per_user)))
    return path
