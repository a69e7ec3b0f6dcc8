"""The vectorised JSONL validation (offline.scan.scan_jsonl: Arrow's JSON reader and checks on
columns) equals the exact per-line path (EventParser.parse_line) on every line: the same
valid events with the same fields, the same dead letters (reason, message, line, original),
the same counts. The lines mix the sample's events with everything the fast path must leave
to the exact one: hostile payloads, JSON that Arrow and orjson read differently (NaN,
Infinity, huge numbers, deep nesting, invalid UTF-8, two objects on a line, an object left
open into the next line), values of another type, nulls, escapes, TAAC lines, blank lines."""
from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from features.config import parse_config
from features.events import EventParser
from offline.batch_io import iter_events
from offline.scan import Rows, exact_rows, scan_jsonl
from tools.data.hostile import hostile_payloads

NOW = 1_764_600_000.0
BASE = {"user_id": 7, "item_id": 12, "timestamp": 1_764_000_000, "action_type": 1,
        "event_id": "u7-1", "dwell_time": 31.25}

TRICKY = [
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":NaN}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":-Infinity}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":NaN}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":9.9e308}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":1E+308}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":"9e308"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":' + b"1" * 320 + b"}",
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":' + b"[" * 1100
    + b"]" * 1100 + b"}",
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":"\xff"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"\xc3\xa9"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"\\u00e9"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"\\ud800"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0} {"user_id":2}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":{"a":1}',
    b'{"user_id":3,"item_id":2,"timestamp":1764000000,"action_type":0}}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":"{"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":"}{"}',
    b'{"user_id":1.0,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000.5,"action_type":0}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000000,"action_type":0}',
    b'{"user_id":1,"item_id":2,"timestamp":1e9,"action_type":0}',
    b'{"user_id":true,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":null,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":null,"event_type":null}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":null,"event_type":"click"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":2,"event_type":"click"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":1,"event_type":"click"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"event_type":"nope"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"event_type":5}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":5}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"'
    + b"e" * 129 + b'"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"'
    + b"e" * 128 + b'"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":86400}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":86400.001}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":0.0005}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":0.0015}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":"3"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":-0.0}',
    b'{"user_id":9223372036854775807,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":9223372036854775808,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":-0,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":1,"user_id":2,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":1,"x":2}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"extra":[1,{"a":null}]}',
    b'{"user_id":1,"item_id":2,"timestamp":99999999999999,"action_type":0}',
    b'{"user_id":1,"item_id":2,"timestamp":1099511627776000,"action_type":0}',
    b' {"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0}\r',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0}  ',
    b'{"user_id":1,\t"item_id":2,"timestamp":1764000000,"action_type":0}',
    b'{"user_id": 1, "item_id": 2, "timestamp": 1764000000, "action_type": 0}',
    b'[[1, 2, null, null, 1, 1764000000], [1, 3, null, null, 0, 1764000100]]',
    b'[1, 2, 3]', b"", b"   ", b"{}", b"{", b"}", b"null", b"17",
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"pad":"'
    + b"y" * 70_000 + b'"}',
]


def mutate(rng: random.Random, line: bytes) -> bytes:
    i = rng.randrange(len(line) + 1)
    return rng.choice([
        lambda: line[:i] + bytes([rng.randrange(32, 127)]) + line[i:],
        lambda: line[:i] + line[i + 1:],
        lambda: line[:i] + rng.choice([b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\",
                                       b"e5", b"NaN", b"\n", b"1" * 30]) + line[i:],
    ])()


def lines_for(rng: random.Random, n: int) -> list[bytes]:
    out = []
    hostile = [p for p, _, _ in hostile_payloads(200, seed=3)]
    for i in range(n):
        r = rng.random()
        ev = dict(BASE, user_id=rng.randrange(1, 50), timestamp=1_764_000_000 + i,
                  event_id=f"u-{i}", action_type=rng.choice([0, 1, 2]),
                  dwell_time=rng.choice([None, 0, 12.5, rng.random() * 100, 86400]))
        if rng.random() < 0.2:
            del ev["action_type"]
            ev["event_type"] = rng.choice(["view", "click", "purchase"])
        ev = {k: v for k, v in ev.items() if v is not None}
        line = orjson.dumps(ev)
        if r < 0.70:
            out.append(line)
        elif r < 0.80:
            out.append(mutate(rng, line))
        elif r < 0.90:
            out.append(rng.choice(TRICKY))
        else:
            out.append(rng.choice(hostile).replace(b"\n", b" "))
    return out


def exact(parser: EventParser, data: bytes, first: int, as_of, counts: Counter):
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return exact_rows(parser, iter_events(iter(lines), first), NOW, as_of, None, counts)


def same_rows(a: Rows, b: Rows) -> None:
    assert len(a) == len(b)
    for c in a.cols:
        assert a.cols[c].tolist() == b.cols[c].tolist(), c
    assert a.event_id.tolist() == b.event_id.tolist()


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_validation_equals_the_parser(tmp_path, seed):
    cfg = parse_config({"mapping_index": str(tmp_path / "index.json"),
                        "events": {"timestamp_unit": ["auto", "auto", "s", "ms"][seed % 4]}},
                       env={})
    parser = EventParser(cfg.events)
    rng = random.Random(seed)
    data = b"\n".join(lines_for(rng, 3000)) + rng.choice([b"\n", b""])
    as_of = None if seed % 2 else 1_764_001_500
    c_fast, c_exact = Counter(), Counter()
    rows, dead = scan_jsonl(parser, data, 41, NOW, as_of, c_fast)
    want_rows, want_dead = exact(parser, data, 41, as_of, c_exact)
    same_rows(rows, want_rows)
    assert dead == want_dead
    assert c_fast == c_exact
    assert len(rows) > 1000 and len(dead) > 100


def test_every_tricky_line_alone_and_among_good_ones(tmp_path):
    parser = EventParser(parse_config({"mapping_index": str(tmp_path / "i.json")},
                                      env={}).events)
    good = orjson.dumps(BASE)
    for line in TRICKY:
        for data in (line, good + b"\n" + line + b"\n" + good + b"\n"):
            c1, c2 = Counter(), Counter()
            rows, dead = scan_jsonl(parser, data, 1, NOW, None, c1)
            want_rows, want_dead = exact(parser, data, 1, None, c2)
            same_rows(rows, want_rows)
            assert dead == want_dead and c1 == c2, line[:80]


def test_without_pyarrow_every_line_takes_the_exact_path(tmp_path, monkeypatch):
    import offline.scan as scan
    parser = EventParser(parse_config({"mapping_index": str(tmp_path / "i.json")},
                                      env={}).events)
    data = b"\n".join(lines_for(random.Random(9), 500)) + b"\n"
    monkeypatch.setattr(scan, "has_pyarrow", lambda: False)
    monkeypatch.setattr(scan, "_arrow_blocks", None)       # never reached
    c1, c2 = Counter(), Counter()
    rows, dead = scan_jsonl(parser, data, 1, NOW, None, c1)
    want_rows, want_dead = exact(parser, data, 1, None, c2)
    same_rows(rows, want_rows)
    assert dead == want_dead and c1 == c2 and len(rows) > 200
