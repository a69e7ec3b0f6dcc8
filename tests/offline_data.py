"""Data and oracles shared by the offline engine tests (local, Spark, train/serve parity)."""
from __future__ import annotations

import random
from pathlib import Path

import orjson

from features.config import ProfileConfig
from offline.formats import read_records, require_pyarrow
from offline.steps import PROFILE_FIELDS
from reference.batch import run_batch as reference_batch
from tools.data.sample import END_TS, SampleSpec, write_sample

D = 86400


def sample_events(folder: Path, users: int = 120, days: int = 35) -> tuple[Path, Path]:
    """The sample (late, too-late, duplicate and bad records) plus the awkward lines a real
    file has: a TAAC seq line of three events, an empty line, a CRLF line ending, an event too
    late for its user (both in one TAAC line and alone), an event id reused with another
    timestamp (no closed form: that user takes the sequential path)."""
    write_sample(SampleSpec(users=users, days=days, items=500), folder)
    events = folder / "events.jsonl"
    t = END_TS - 3600
    extra = [
        orjson.dumps([[3, None, {"1": 2}, None, None, t],
                      [3, 11, None, None, 1, t + 1],
                      [3, 12, None, None, 0, END_TS - 45 * D]]),   # too late after the first
        b"",
        orjson.dumps({"user_id": 4, "item_id": 7, "timestamp": t, "action_type": 1}) + b"\r",
        orjson.dumps({"user_id": 4, "item_id": 7, "timestamp": END_TS - 40 * D,
                      "event_type": "click", "event_id": "old"}),
        # an id reused with another timestamp: user 5 takes the sequential path
        orjson.dumps({"user_id": 5, "item_id": 9, "timestamp": t - 100, "action_type": 0,
                      "event_id": "reused"}),
        orjson.dumps({"user_id": 5, "item_id": 10, "timestamp": t - 50, "action_type": 1,
                      "event_id": "reused"}),
    ]
    with open(events, "ab") as f:
        f.write(b"\n".join(extra) + b"\n")
    return folder / "item_feat_dict.json", events


def without_updated_at(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "updated_at"} for r in records]


def dead_letter_keys(path: Path) -> list[tuple]:
    """What must agree between engines: reason, line and original (the message of a
    future_timestamp carries the run's clock)."""
    return [(d["reason"], d["line"], d["original"]) for d in read_records(path)]


def decoded_lines(events: Path) -> list[tuple[int, bytes, object]]:
    """(line number, line, decoded JSON) of every line that is valid JSON."""
    out = []
    for lineno, line in enumerate(events.read_bytes().split(b"\n"), 1):
        try:
            out.append((lineno, line, orjson.loads(line)))
        except orjson.JSONDecodeError:
            pass
    return out


def event_objects(events: Path) -> list[tuple[int, dict]]:
    """(line, object) of every line that decodes to an event-like object."""
    return [(lineno, obj) for lineno, _, obj in decoded_lines(events)
            if isinstance(obj, dict) and type(obj.get("user_id")) is int]


def random_labels(events: Path, n: int, seed: int) -> list[dict]:
    """Labels at random times for random users, including times before a user's first event,
    users with no events at all, and two labels of one user on the same second."""
    rng = random.Random(seed)
    firsts: dict[int, int] = {}
    for _, o in event_objects(events):
        ts = o.get("timestamp")
        if type(ts) is int and ts < 2 ** 33 and o["user_id"] >= 0:
            firsts[o["user_id"]] = min(firsts.get(o["user_id"], ts), ts)
    users = sorted(firsts)
    lo, hi = min(firsts.values()), END_TS
    labels = []
    for i in range(n):
        uid = rng.choice(users)
        kind = rng.random()
        if kind < 0.15:
            ts = firsts[uid] - rng.randint(1, 3 * D)              # before its first event
        elif kind < 0.2:
            uid, ts = 10 ** 9 + i, rng.randint(lo, hi)            # a user with no events
        else:
            ts = rng.randint(lo, hi)
        labels.append({"user_id": uid, "ts": ts, "clicked": rng.random() < 0.3, "row": i})
    for i in rng.sample(range(n), 3):                             # same user, same second
        labels.append(dict(labels[i], clicked=not labels[i]["clicked"], row=len(labels)))
    rng.shuffle(labels)
    return labels


DEFAULT_PROFILE = {"features": {"106": [1060000000], "107": [1070000000],
                                "108": [1080000000], "110": [1100000000]},
                   "interest_tags": [], "behavior_preferences": [], "activity_level": 0,
                   "user_type": 0, "confidence": 0.0}


def brute_force(cfg: ProfileConfig, items: Path, events: Path, labels: list[dict],
                work: Path) -> list[dict]:
    """The training rows by definition: for each label, the batch path run on just that
    user's events with --as-of ts (it drops those after ts); a user with none, the default."""
    lines: dict[int, list[bytes]] = {}
    for _, line, obj in decoded_lines(events):
        if isinstance(obj, dict) and type(obj.get("user_id")) is int:
            lines.setdefault(obj["user_id"], []).append(line)
        elif isinstance(obj, list):                    # a TAAC line: its rows' users
            for uid in {r[0] for r in obj if isinstance(r, list) and r}:
                lines.setdefault(uid, []).append(line)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, lab in enumerate(labels):
        mine = work / f"u{i}.jsonl"
        mine.write_bytes(b"\n".join(lines.get(lab["user_id"], [])) + b"\n")
        reference_batch(cfg, items, mine, work / f"p{i}.jsonl", as_of=lab["ts"],
                        progress_stream=None)
        recs = read_records(work / f"p{i}.jsonl")
        profile = {k: recs[0][k] for k in PROFILE_FIELDS} if recs else \
            {"as_of": lab["ts"], **DEFAULT_PROFILE}
        rows.append({**lab, **profile})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def events_to_parquet(events: Path, out: Path, shuffle_seed: int | None = None,
                      row_group_size: int = 2000) -> Path:
    """The events a Parquet table can hold (typed columns: rows whose ids and timestamp are
    not integers are left out), with an `offset` column = the line number; rows shuffled
    when a seed is given (the order column then carries the log order)."""
    pq = require_pyarrow()
    import pyarrow as pa
    rows = []
    for lineno, _, obj in decoded_lines(events):
        if isinstance(obj, dict) and all(type(obj.get(k, 0)) is int for k in
                                         ("user_id", "item_id", "timestamp", "action_type")):
            rows.append({**obj, "offset": lineno})
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(rows)
    columns = {"user_id": pa.int64(), "item_id": pa.int64(), "timestamp": pa.int64(),
               "action_type": pa.int64(), "event_type": pa.string(),
               "dwell_time": pa.float64(), "event_id": pa.string(), "offset": pa.int64()}
    table = pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows],
                                 schema=pa.schema(list(columns.items())))
    pq.write_table(table, out, row_group_size=row_group_size)
    return out
