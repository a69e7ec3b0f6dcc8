"""The quixstreams peer of `make bench` does the work the peers share (tools/bench/peers): per
user, per-day counts per action over the last 30 days and a dwell sum; a malformed value is
dropped. (`make bench` holds the Kafka Streams peer's output equal to this one's.)"""
from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tools.bench.peers.quix_peer import DAYS, parse, update


class DictState:
    def __init__(self) -> None:
        self.d: dict = {}

    def get(self, key, default=None):
        return orjson.loads(orjson.dumps(self.d[key])) if key in self.d else default

    def set(self, key, value) -> None:
        self.d[key] = value


def test_malformed_values_are_dropped():
    for raw in (b"", b"{", b"[]", b'{"user_id": 1}', b'{"user_id": "1", "timestamp": 5, '
                b'"action_type": 0}', b'{"user_id": 1, "timestamp": 5, "action_type": 4}',
                b'{"user_id": 1, "timestamp": 5.5, "action_type": 0}',
                b'{"user_id": 1, "timestamp": 5, "action_type": 0, "dwell_time": "x"}'):
        assert parse(raw) is None, raw
        assert update(raw, DictState()) is None


events = st.lists(st.tuples(st.integers(0, 80), st.integers(0, 3),
                            st.one_of(st.none(), st.floats(0, 1000, allow_nan=False))),
                  min_size=1, max_size=60)


@given(events)
def test_counts_over_the_last_30_days_and_the_dwell_sum(evs):
    state, out = DictState(), None
    for day, action, dwell in evs:
        e = {"user_id": 7, "timestamp": day * 86_400 + 5, "action_type": action}
        if dwell is not None:
            e["dwell_time"] = dwell
        out = update(orjson.dumps(e), state)
    # the slow, obvious way: the latest day never goes back, so an event counts when its day
    # is among the last 30 up to the latest
    latest = max(d for d, _, _ in evs)
    expected = [0, 0, 0, 0]
    for day, action, _ in evs:
        if day > latest - DAYS:
            expected[action] += 1
    dwell_ms = sum(int(d * 1000 + 0.5) for _, _, d in evs if d is not None)
    assert out == {"user_id": 7, "day": latest, "counts_30d": expected, "dwell_ms": dwell_ms}
