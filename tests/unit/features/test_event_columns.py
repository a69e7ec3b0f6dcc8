"""features.event_columns.parse_batch against the per-event reference
(EventParser.parse_message): on generated batches, near-valid events with each field pushed
over its edges, hostile payloads and keys, under every timestamp unit, the same Event or the
same Rejection (reason and text) for every message, in batch order."""
from __future__ import annotations

import json
from typing import Callable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import EventsConfig
from features.event_columns import EMPTY, parse_batch
from features.events import MAX_EVENT_BYTES, Event, EventParser, Rejection, new_event

NOW = 1_764_547_200.0
SKEW = 300
PARSERS = {unit: EventParser(EventsConfig(timestamp_unit=unit, max_future_skew_seconds=SKEW))
           for unit in ("s", "ms", "auto")}
# a skew so large that only the 2^40-second bound stops a timestamp
PARSERS["far"] = EventParser(EventsConfig(timestamp_unit="auto", max_future_skew_seconds=2 ** 42))
ACTIONS = sorted(PARSERS["s"].action_codes)

big = st.sampled_from([2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64, -1, -(2 ** 63), 0])
wrong = st.one_of(st.none(), st.booleans(), st.text(max_size=3), st.just([1]),
                  st.floats(allow_nan=False, allow_infinity=False))
ident = st.one_of(st.integers(0, 10 ** 6), big, wrong)
now_s = int(NOW)
timestamp = st.one_of(
    st.integers(now_s - 40 * 86400, now_s + 2 * SKEW),                     # seconds, some ahead
    st.integers(now_s * 1000 - 86400_000, now_s * 1000 + 2 * SKEW * 1000),  # milliseconds
    st.integers(10 ** 11 - 3, 10 ** 11 + 3),                                # the auto threshold
    st.integers(2 ** 40 - 2, 2 ** 40 + 2), st.integers(2 ** 40 * 1000 - 2, 2 ** 40 * 1000 + 2),
    st.integers(-3, 3), big, wrong,
    st.floats(now_s - 86400, now_s + 86400))
action = st.one_of(st.sampled_from(ACTIONS), st.integers(-2, 9), big, wrong)
dwell = st.one_of(
    st.none(), st.integers(-2, 86401), st.sampled_from([0.0, -0.0, 0.0005, 0.0015, 0.0125,
                                                        86400.0, 86400.0000001, 2 ** 70]),
    st.floats(0, 86400), st.floats(-1, 90000), big, st.text(max_size=2))
event_id = st.one_of(st.none(), st.text(max_size=5), st.text(min_size=127, max_size=130),
                     st.integers(0, 5), st.booleans())
event_type = st.one_of(st.none(), st.sampled_from(["click", "view", "purchase", "nope"]), wrong)

event = st.fixed_dictionaries(
    {"user_id": ident, "item_id": ident, "timestamp": timestamp},
    optional={"action_type": action, "event_type": event_type, "dwell_time": dwell,
              "event_id": event_id})
common = st.fixed_dictionaries(            # the common shape, mostly valid
    {"user_id": st.integers(0, 10 ** 6), "item_id": st.integers(0, 10 ** 6),
     "timestamp": st.integers(now_s - 40 * 86400, now_s + SKEW + 2),
     "action_type": st.sampled_from(ACTIONS)},
    optional={"dwell_time": st.one_of(st.integers(0, 86400), st.floats(0, 86400)),
              "event_id": st.text(max_size=10)})

named = st.fixed_dictionaries(             # the common shape with an event_type for the action
    {"user_id": st.integers(0, 10 ** 6), "item_id": st.integers(0, 10 ** 6),
     "timestamp": st.integers(now_s - 40 * 86400, now_s + SKEW + 2),
     "event_type": st.sampled_from(sorted(PARSERS["s"].event_types) + ["nope"])},
    optional={"action_type": st.one_of(st.none(), st.sampled_from(ACTIONS)),
              "dwell_time": st.one_of(st.integers(0, 86400), st.floats(0, 86400)),
              "event_id": st.text(max_size=10)})


def dumps(obj) -> bytes:
    """JSON of obj (integers of any size, which orjson does not write)."""
    return json.dumps(obj, separators=(",", ":")).encode()


EDGES = {"user_id": ident, "item_id": ident, "timestamp": timestamp, "action_type": action,
         "event_type": event_type, "dwell_time": dwell, "event_id": event_id}


@st.composite
def near_valid(draw) -> tuple[bytes, bytes]:
    """A valid event of the common shape with its key, one field then pushed to an edge (or
    removed)."""
    obj = draw(common)
    name = draw(st.sampled_from(sorted(EDGES)))
    if draw(st.integers(0, 9)) == 0:
        obj.pop(name, None)
    else:
        obj[name] = draw(EDGES[name])
    uid = obj.get("user_id")
    return dumps(obj), str(uid).encode() if type(uid) is int else b"1"


@st.composite
def message(draw) -> tuple[bytes | None, bytes | str | None]:
    kind = draw(st.sampled_from(["near"] * 8 + ["common"] * 3 + ["event"] * 3 +
                                ["named"] * 2 + ["raw", "json", "none", "big"]))
    if kind == "near":
        return draw(near_valid())
    if kind in ("common", "event", "named"):
        obj = draw({"common": common, "event": event, "named": named}[kind])
        raw = dumps(obj)
        uid = obj.get("user_id")
        key = draw(st.one_of(
            st.just(str(uid).encode()) if type(uid) is int else st.none(),
            st.just(str(uid).encode()) if type(uid) is int else st.none(),
            st.just(str(uid)), st.none(), st.binary(max_size=4),
            st.just(b"0" + str(uid).encode()), st.just(str(uid).encode() + b" ")))
        return raw, key
    if kind == "raw":
        return draw(st.binary(max_size=30)), draw(st.one_of(st.none(), st.binary(max_size=3)))
    if kind == "json":
        return dumps(draw(st.one_of(st.lists(st.integers(), max_size=3),
                                           st.integers(), st.text(max_size=3)))), b"1"
    if kind == "none":
        return None, b"1"
    # over the size limit by a few bytes, or just within it
    pad = MAX_EVENT_BYTES - 100 + draw(st.integers(0, 200))
    obj = {"user_id": 1, "item_id": 2, "timestamp": now_s, "action_type": ACTIONS[0],
           "event_id": "x" * pad}
    return orjson.dumps(obj), b"1"


def reference(parser: EventParser, values, keys) -> list[Event | Rejection]:
    return [EMPTY if v is None else parser.parse_message(v, k, NOW)
            for v, k in zip(values, keys)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(message(), min_size=1, max_size=60), unit=st.sampled_from(sorted(PARSERS)))
def test_a_batch_gets_the_verdicts_of_the_per_event_parser(batch, unit):
    parser = PARSERS[unit]
    values = [v for v, _ in batch]
    keys = [k for _, k in batch]
    got = parse_batch(parser, values, keys, NOW)
    expected = reference(parser, values, keys)
    merged = sorted(got.events + got.rejected, key=lambda p: p[0])
    assert [i for i, _ in merged] == list(range(len(batch)))
    assert [v for _, v in merged] == expected
    assert all(type(e) is Event for _, e in got.events)
    assert all(type(r) is Rejection for _, r in got.rejected)
    # the ids and counters stay Python ints (the state code hashes and packs them)
    for _, e in got.events:
        assert type(e.user_id) is int and type(e.ts) is int and type(e.action) is int
        assert e.dwell_ms is None or type(e.dwell_ms) is int


EDGE_VALUES = {
    "user_id": [0, 1, -1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, 2 ** 64, -(2 ** 63), 1.0, True,
                "1", None],
    "item_id": [0, -1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 1.5, False, "2", None, [1]],
    "timestamp": [0, -1, now_s, now_s + SKEW, now_s + SKEW + 1, 10 ** 11 - 1, 10 ** 11,
                  now_s * 1000, (now_s + SKEW) * 1000 + 999, (now_s + SKEW + 1) * 1000,
                  2 ** 40 - 1, 2 ** 40, 2 ** 40 * 1000 - 1, 2 ** 40 * 1000, 2 ** 63 - 1,
                  2 ** 63, float(now_s), now_s + 0.5, "1", None],
    "action_type": ACTIONS + [-1, max(ACTIONS) + 1, 255, 256, 2 ** 63, 1.0, True, "1", None],
    "event_type": ["click", "view", "purchase", "nope", 1, None],
    "dwell_time": [0, 86400, 86401, -1, 0.0, -0.0, 0.0005, 0.0015, 0.0125, 2.5e-4,
                   86400.0, 86400.0000001, -1e-9, 2 ** 63, 2 ** 70, "1", None, True],
    "event_id": ["", "e", "x" * 128, "x" * 129, "é" * 128, 1, None, True],
}


@pytest.mark.parametrize("unit", sorted(PARSERS))
def test_each_field_at_each_edge_alone(unit):
    """Every edge value of every field in an otherwise valid event (and the field left out),
    keyed by its user_id when that is an integer: the same verdicts as the reference."""
    parser = PARSERS[unit]
    base = {"user_id": 42, "item_id": 7, "timestamp": now_s - 86400, "action_type": ACTIONS[0],
            "dwell_time": 1.5, "event_id": "e1"}
    values, keys = [], []
    for name, edges in EDGE_VALUES.items():
        variants = [{k: v for k, v in base.items() if k != name}]
        variants += [{**base, name: v} for v in edges]
        for obj in variants:
            uid = obj.get("user_id")
            values.append(dumps(obj))
            keys.append(str(uid).encode() if type(uid) is int else b"42")
    for key in (b"042", b"42 ", b"+42", "42", None, b"\xff", b""):
        values.append(dumps(base))
        keys.append(key)
    expected = reference(parser, values, keys)
    assert sum(type(e) is Event for e in expected) > 10          # valid ones among them
    # one batch per message: an integer beyond 64 bits sends its whole batch to the reference
    for v, k, e in zip(values, keys, expected):
        got = parse_batch(parser, [v], [k], NOW)
        assert [x for _, x in got.events + got.rejected] == [e], (v, k)


def valid_batch(unit: str, action: Callable[[int], dict]) -> tuple[list[bytes], list[bytes]]:
    """50 valid events of user u = 0..49 whose action fields are action(u), with their keys."""
    ts = now_s * 1000 if unit == "ms" else now_s
    values = [orjson.dumps({"user_id": u, "item_id": 7, "timestamp": ts - u, **action(u),
                            "dwell_time": u / 8, "event_id": f"e{u}"}) for u in range(50)]
    return values, [str(u).encode() for u in range(50)]


def judged_in_bulk(parser: EventParser, values, keys, monkeypatch) -> list[Event | Rejection]:
    """parse_batch's verdicts, with the reference parser never asked."""
    asked: list = []
    monkeypatch.setattr(parser, "parse_message", lambda *a: asked.append(a))
    got = parse_batch(parser, values, keys, NOW)
    assert asked == [] and got.rejected == []
    return [e for _, e in got.events]


@pytest.mark.parametrize("unit", sorted(PARSERS))
def test_valid_events_of_the_common_shape_are_judged_in_bulk(unit, monkeypatch):
    """The bulk path decides the common shape: the reference is asked only about the others
    (here: none), so the two are compared on the bulk checks and not on the reference twice."""
    parser = PARSERS[unit]
    values, keys = valid_batch(unit, lambda u: {"action_type": ACTIONS[u % len(ACTIONS)]})
    expected = reference(parser, values, keys)
    assert judged_in_bulk(parser, values, keys, monkeypatch) == expected


@pytest.mark.parametrize("unit", sorted(PARSERS))
def test_valid_events_naming_a_configured_event_type_are_judged_in_bulk(unit, monkeypatch):
    parser = PARSERS[unit]
    names = sorted(parser.event_types)
    values, keys = valid_batch(unit, lambda u: {"event_type": names[u % len(names)]})
    expected = reference(parser, values, keys)
    assert all(type(e) is Event for e in expected)
    assert [e.action for e in expected] == [parser.event_types[names[u % len(names)]]
                                            for u in range(50)]
    assert judged_in_bulk(parser, values, keys, monkeypatch) == expected


def test_integers_beyond_64_bits_leave_the_batch_to_the_reference():
    parser = PARSERS["auto"]
    values = [orjson.dumps({"user_id": 2 ** 64 - 1, "item_id": 1, "timestamp": now_s,
                            "action_type": ACTIONS[0]}),
              orjson.dumps({"user_id": 5, "item_id": 1, "timestamp": now_s,
                            "action_type": ACTIONS[0]})]
    keys = [str(2 ** 64 - 1).encode(), b"5"]
    got = parse_batch(parser, values, keys, NOW)
    assert [r.reason for _, r in got.rejected] == ["out_of_range"]
    assert [e.user_id for _, e in got.events] == [5]


def test_hostile_payloads_mixed_with_valid_events_get_the_reference_verdicts():
    """The chaos run's hostile generator (random bytes, deep JSON, huge numbers, wrong types,
    oversized messages, bad keys) shuffled among valid events, in batches of 500."""
    import random

    from tools.data.hostile import hostile_payloads
    parser = PARSERS["auto"]
    rng = random.Random(7)
    mixed = [(v, k) for v, k, _ in hostile_payloads(3000, seed=7, big_messages=3)]
    for u in range(3000):
        obj = {"user_id": u, "item_id": rng.randrange(500), "timestamp": now_s - rng.randrange(
            30 * 86400), "action_type": rng.choice(ACTIONS), "event_id": f"u{u}"}
        if rng.random() < 0.5:
            obj["dwell_time"] = round(rng.uniform(0, 600), 3)
        mixed.append((orjson.dumps(obj), str(u).encode()))
    rng.shuffle(mixed)
    for b in range(0, len(mixed), 500):
        values = [v for v, _ in mixed[b:b + 500]]
        keys = [k for _, k in mixed[b:b + 500]]
        got = parse_batch(parser, values, keys, NOW)
        merged = [v for _, v in sorted(got.events + got.rejected, key=lambda p: p[0])]
        assert merged == reference(parser, values, keys)
        assert got.events                   # valid ones were there to judge in bulk


@given(st.tuples(st.integers(0, 2 ** 63 - 1), st.integers(0, 2 ** 63 - 1),
                 st.integers(0, 2 ** 40), st.integers(0, 255),
                 st.one_of(st.none(), st.integers(0, 86_400_000)),
                 st.one_of(st.none(), st.text(max_size=5))))
def test_new_event_is_the_event_the_constructor_makes(fields):
    made, built = new_event(*fields), Event(*fields)
    assert type(made) is Event and made == built and hash(made) == hash(built)
    assert repr(made) == repr(built)
    with pytest.raises(AttributeError):
        made.ts = 1         # still frozen
