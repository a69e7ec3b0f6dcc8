"""Hostile input through the validator: random bytes, deep JSON, huge numbers, NaN, wrong types,
invalid UTF-8, oversized messages, missing keys, key/payload mismatches. Every payload is either
an Event or a Rejection with a §6 reason; nothing raises. FUZZ_EXAMPLES sets the count
(`make chaos`: 100,000; `make test`: 3,000)."""
from __future__ import annotations

import os
from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import EventsConfig
from features.events import REASONS, Event, EventParser, Rejection
from tools.data.hostile import hostile_payloads

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))
NOW = 1_764_547_200.0
PARSER = EventParser(EventsConfig())
SEEN: Counter = Counter()

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                        st.floats(allow_nan=False), st.text(max_size=20))
json_value = st.recursive(json_scalar, lambda c: st.one_of(
    st.lists(c, max_size=4), st.dictionaries(st.text(max_size=8), c, max_size=4)), max_leaves=20)
field = st.one_of(json_value, st.integers(0, 2 ** 64), st.floats(), st.just("1"))
event_like = st.fixed_dictionaries({}, optional={
    "user_id": field, "item_id": field, "timestamp": field, "action_type": field,
    "event_type": st.one_of(st.sampled_from(["click", "view", "purchase", "nope"]), field),
    "dwell_time": field, "event_id": field, "extra": json_value})


def _bytes_of(obj) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:            # NaN/inf and other values JSON cannot hold
        return repr(obj).encode()


payload = st.one_of(
    st.binary(max_size=200),
    event_like.map(_bytes_of),
    json_value.map(_bytes_of),
    st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")),
)
key = st.one_of(st.none(), st.binary(max_size=12), st.integers(0, 2 ** 64).map(
    lambda i: str(i).encode()))


def judge(raw: bytes, k) -> str:
    out = PARSER.parse_message(raw, k, NOW)
    assert type(out) in (Event, Rejection), out
    # The batch path's lines have no key: the same verdict, but where the key decides.
    line = PARSER.parse_line(raw, NOW)
    if type(out) is Rejection and out.reason in ("missing_key", "key_mismatch"):
        assert (k is None) == (out.reason == "missing_key"), (k, out)
        assert type(line) is Event or line.reason == "future_timestamp", (out, line)
    else:
        assert out == line, (k, out, line)
    if type(out) is Rejection:
        assert out.reason in REASONS and out.message, out
        return out.reason
    assert 0 <= out.user_id < 2 ** 63 and 0 <= out.item_id < 2 ** 63 and out.ts >= 0
    return "applied"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=payload, k=key)
def test_any_payload_is_an_event_or_a_reason(raw, k):
    SEEN[judge(raw, k)] += 1


def test_crafted_hostile_payloads():
    """The classes the issue names, made on purpose (also what the live fuzz sends)."""
    counts = Counter()
    for raw, k, expect in hostile_payloads(2000, seed=5):
        got = judge(raw, k)
        counts[got] += 1
        assert expect is None or got == expect, (raw[:200], k, got, expect)
    print(dict(counts))
    for reason in ("malformed_json", "not_an_object", "too_large", "missing_field", "bad_type",
                   "out_of_range", "unknown_action", "missing_key", "key_mismatch",
                   "future_timestamp"):
        assert counts[reason] > 0, reason
    assert counts["applied"] > 0
