"""The quixstreams peer of `make bench`: per user, per-day counts per action over the last 30
days and a dwell sum, in quixstreams' RocksDB state with its changelog, and a record out per
change (the same work as kstreams/src/main/java/profiles/bench/PeerApp.java).

Runs in a virtualenv of its own (tools/bench/peers/quix.py makes it): quixstreams pins versions
of pydantic and confluent-kafka that ours do not share, so this file imports nothing of ours.

    python quix_peer.py BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP STATE_DIR GUARANTEE
"""
from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:        # imported in main: the unit tests run without quixstreams
    from quixstreams import State

ACTIONS = 4                 # action codes 0..3
DAYS = 30
MS_THRESHOLD = 100_000_000_000      # a timestamp at or above it is in milliseconds


def parse(value: bytes | None) -> tuple[int, int, int, int] | None:
    """(user, day, action, dwell ms), or None when the value is not a well-formed event."""
    try:
        e = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(e, dict):
        return None
    user, ts, action, dwell = (e.get("user_id"), e.get("timestamp"), e.get("action_type"),
                               e.get("dwell_time"))
    dwell = 0 if dwell is None else dwell          # absent or null: none
    if type(user) is not int or type(ts) is not int or type(action) is not int \
            or type(dwell) not in (int, float) or user < 0 or ts < 0 \
            or not 0 <= action < ACTIONS:
        return None
    seconds = ts // 1000 if ts >= MS_THRESHOLD else ts
    # rounded half up, as Java's Math.round in the Kafka Streams peer
    return user, seconds // 86_400, action, math.floor(dwell * 1000 + 0.5)


def update(value: bytes, state: State) -> dict | None:
    event = parse(value)
    if event is None:
        return None                     # malformed: dropped
    user, day, action, dwell_ms = event
    days: list[list[int]] = state.get("days", [])     # [day, count per action...]
    dwell = state.get("dwell", 0) + dwell_ms
    for row in days:
        if row[0] == day:
            row[1 + action] += 1
            break
    else:
        row = [day] + [0] * ACTIONS
        row[1 + action] = 1
        days.append(row)
    latest = max(r[0] for r in days)
    days = [r for r in days if r[0] > latest - DAYS]
    state.set("days", days)
    state.set("dwell", dwell)
    totals = [sum(r[1 + a] for r in days) for a in range(ACTIONS)]
    return {"user_id": user, "day": latest, "counts_30d": totals, "dwell_ms": dwell}


def main(argv: list[str]) -> None:
    if len(argv) != 6:
        sys.exit("usage: quix_peer.py BOOTSTRAP IN_TOPIC OUT_TOPIC GROUP STATE_DIR GUARANTEE")
    from quixstreams import Application
    bootstrap, in_topic, out_topic, group, state_dir, guarantee = argv
    app = Application(broker_address=bootstrap, consumer_group=group,
                      auto_offset_reset="earliest", commit_interval=1.0,   # as our workers'
                      state_dir=state_dir, processing_guarantee=guarantee, loglevel="WARNING")
    source = app.topic(in_topic, key_deserializer="str", value_deserializer="bytes")
    sink = app.topic(out_topic, key_serializer="str", value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(update, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main(sys.argv[1:])
