"""Deterministic hostile input for the fuzz tests and the chaos run: each payload with its message
key and, where the class decides it, the §6 reason it must get (None: any outcome is right)."""
from __future__ import annotations

import random
from typing import Iterator

import orjson

BASE_TS = 1_764_000_000            # inside the sample data's range, in the past
FUTURE_TS = 4_000_000_000
BIG_MESSAGE = 10 * 1024 * 1024


def _event(rng: random.Random, uid: int) -> dict:
    return {"user_id": uid, "item_id": rng.randrange(1, 5000),
            "timestamp": BASE_TS + rng.randrange(0, 86400 * 5), "action_type": rng.randrange(3)}


def hostile_payloads(n: int, seed: int = 1, big_messages: int = 0,
                     users: range = range(80_000_000, 80_001_000)
                     ) -> Iterator[tuple[bytes, bytes | None, str | None]]:
    """n payloads cycling through the classes; `big_messages` of BIG_MESSAGE bytes first."""
    rng = random.Random(seed)
    for _ in range(big_messages):
        yield b'{"user_id": 1, "pad": "' + b"x" * BIG_MESSAGE + b'"}', None, "too_large"
    classes = [
        lambda uid: (bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))), None, None),
        lambda uid: (b"[" * rng.randrange(1100, 5000), None, "malformed_json"),
        lambda uid: (b'{"a":' * 1100 + b"1" + b"}" * 1100, None, "malformed_json"),
        lambda uid: (b'{"user_id": ' + str(uid).encode() + b', "x": "\xff\xfe"}', None,
                     "malformed_json"),
        lambda uid: (b'{"user_id": NaN, "item_id": 1, "timestamp": 1, "action_type": 0}', None,
                     "malformed_json"),
        lambda uid: (b'{"user_id": 1e400, "item_id": 1, "timestamp": 1, "action_type": 0}', None,
                     "malformed_json"),
        lambda uid: (orjson.dumps([_event(rng, uid)]), None, "not_an_object"),
        lambda uid: (orjson.dumps({**_event(rng, uid), "pad": "y" * 70_000}), None,
                     "too_large"),
        lambda uid: (orjson.dumps({k: v for k, v in _event(rng, uid).items()
                                   if k != "timestamp"}), None, "missing_field"),
        lambda uid: (orjson.dumps({**_event(rng, uid), "user_id": str(uid)}), None, "bad_type"),
        lambda uid: (orjson.dumps(_event(rng, uid)).replace(
            b'"item_id":', b'"item_id":12345678901234567890123,"was":'), None, "bad_type"),
        lambda uid: (orjson.dumps({**_event(rng, uid), "item_id": -7}), None, "out_of_range"),
        lambda uid: (orjson.dumps({**_event(rng, uid), "dwell_time": 1e9}), None,
                     "out_of_range"),
        lambda uid: (orjson.dumps({**_event(rng, uid), "action_type": 42}), None,
                     "unknown_action"),
        lambda uid: (orjson.dumps(_event(rng, uid)), str(uid + 1).encode(), "key_mismatch"),
        lambda uid: (orjson.dumps(_event(rng, uid)), b"\xff\xfe\x00", "key_mismatch"),
        lambda uid: (orjson.dumps(_event(rng, uid)), None, "missing_key"),
        lambda uid: (orjson.dumps({**_event(rng, uid), "timestamp": FUTURE_TS}), None,
                     "missing_key"),                    # missing_key comes first
        lambda uid: (orjson.dumps({**_event(rng, uid), "timestamp": FUTURE_TS}),
                     str(uid).encode(), "future_timestamp"),
        lambda uid: (orjson.dumps(_event(rng, uid)), str(uid).encode(), "applied"),
        lambda uid: (orjson.dumps({**{k: v for k, v in _event(rng, uid).items()
                                      if k != "action_type"},
                                   "event_type": "click", "dwell_time": 12.5}),
                     str(uid).encode(), "applied"),
    ]
    for i in range(n):
        uid = rng.choice(users)
        yield classes[i % len(classes)](uid)
