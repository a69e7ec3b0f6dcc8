"""The bootstrap's states (bootstrap.build) against the stream's own per-user path on the same
log (offline.core.replay: the columnar apply, event by event) and the batch path's profiles;
the hand-over's parts (bootstrap.handover)."""
from __future__ import annotations

import random

import orjson
import pytest

from bootstrap.build import build_users, kafka_partitions
from bootstrap.handover import BootstrapError, HandOver, read_offsets_file
from bootstrap.spill import AGGREGATE, PROFILE, STATE
from features import columnar
from features.columnar.layout import HEADER_SIZE
from features.config import parse_config
from features.events import Event
from features.runtime import FeatureRuntime
from offline import core
from offline.scan import Rows
from offline.steps import in_log_order, to_log
from streams.state.table_keys import NO_HANDOVER, PartitionClock, user_key

DAY = 86400
D0 = 20000 * DAY


def _log(seed: int, n: int) -> list[tuple]:
    """(user, order, line, sub, event) rows: 12 users over 40 days, late events, reused ids."""
    rng = random.Random(seed)
    rows, t = [], D0
    for line in range(1, n + 1):
        t += rng.randint(0, 8 * 3600)
        ts = t - rng.randint(0, 35 * DAY) if rng.random() < 0.1 else t
        eid = f"e{rng.randint(0, 30)}" if rng.random() < 0.4 else None
        ev = Event(rng.randint(1, 12), rng.randint(1, 40), ts, rng.randint(0, 2),
                   rng.choice([None, 1500]), eid)
        rows.append((ev.user_id, None, line, 0, ev))
    return rows


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    d = tmp_path_factory.mktemp("bootstrap")
    return FeatureRuntime.from_config(parse_config({"mapping_index": str(d / "i.json")},
                                                   env={}))


@pytest.mark.parametrize("seed", range(6))
def test_each_state_is_the_streams_after_the_same_events_published_once(rt, seed, tmp_path):
    rows = _log(seed, 600)
    handover = HandOver(4, until_offsets=(100, 200, 300, 400))
    # in memory, on disk (the local engine's), and moved to disk after (Spark's on the driver)
    spill = [None, str(tmp_path), None][seed % 3]
    built = build_users(rt, in_log_order(Rows.of_events(rows), False), handover, "murmur2",
                        1_700_000_000_000, spill)
    if seed % 3 == 2:
        built.spill_to(tmp_path / "driver.bin")
    assert bool(built.spills) == (seed % 3 > 0) and (not built.records) == (seed % 3 > 0)
    by_user: dict[int, list[Event]] = {}
    for _, _, _, _, ev in rows:
        by_user.setdefault(ev.user_id, []).append(ev)
    parts = dict(zip(sorted(by_user), kafka_partitions(sorted(by_user), "murmur2", 4)))
    assert sorted((p, k) for _, p, k, _ in built.iter(STATE)) == \
        sorted((parts[u], user_key(u)) for u in by_user)
    profiles = {orjson.loads(v)["user_id"]: orjson.loads(v) for _, _, _, v in
                built.iter(PROFILE)}
    batch = core.run_users(rt, to_log(in_log_order(Rows.of_events(rows), False)))
    want_profiles = dict(zip(batch.user_ids, batch.profiles))
    for _, p, key, blob in built.iter(STATE):
        uid = int(key)
        state = columnar.decode(blob, rt.engine.tz)
        ref = core.replay(rt, by_user[uid]).state
        # the window's data: byte for byte the stream's
        assert (state.T, state.counts(), state.w) == (ref.T, ref.counts(), ref.w)
        assert bytes(state.buf[HEADER_SIZE:]) == bytes(columnar.encode(ref)[HEADER_SIZE:])
        # published once, as of T; handed over at the partition's offset
        assert (state.version, state.source_offset) == (1, handover.until_offsets[p] - 1)
        assert state.published_digest == want_profiles[uid].digest()
        tz = rt.engine.tz
        assert state.due_day == columnar.next_change_days([ref], [(ref.T + tz) // DAY],
                                                          rt.engine.windows, tz)[0]
        rec = profiles[uid]
        assert rec["version"] == 1 and rec["trigger"] == "event"
        want = want_profiles[uid].to_record(1, "event", rec["updated_at"])
        assert rec == orjson.loads(orjson.dumps(want))
    too_late = sorted((d[0], d[1]) for d in built.dead)
    assert too_late == sorted((rows[i][2], 0) for i, _ in _too_late_positions(rt, rows))
    assert built.counts["users"] == built.counts["states"] == len(by_user)
    assert built.counts["aggregates"] == sum(1 for _ in built.iter(AGGREGATE)) > 0
    assert built.counts["applied"] + built.counts["duplicates"] + len(too_late) == len(rows)
    assert built.stream_time == {p: max(ev.ts for u, ev in ((r[0], r[4]) for r in rows)
                                        if parts[u] == p) for p in set(parts.values())}


def _too_late_positions(rt, rows):
    """(index into rows, user T then) of the events replay finds too late, user by user."""
    out = []
    by_user: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_user.setdefault(r[0], []).append(i)
    for idx in by_user.values():
        run = core.replay(rt, [rows[i][4] for i in idx])
        out += [(idx[j], t) for j, t in run.too_late]
    return out


def test_a_hand_over_at_a_time_carries_no_source_offset_and_its_clock_says_the_time():
    h = HandOver(3, until_ts=D0)
    assert h.mode == "time" and h.source_offset(2) == -1
    assert h.clock(1, D0 - 5) == PartitionClock(D0 - 5, -1, D0)
    at = HandOver(2, until_offsets=(7, 0))
    assert at.source_offset(0) == 6 and at.clock(0, 9) == PartitionClock(9, 6, NO_HANDOVER)


@pytest.mark.parametrize("kw", [{}, {"until_offsets": (1, 2), "until_ts": 5},
                                {"until_offsets": (1,)}])
def test_a_hand_over_needs_one_mode_and_every_partition(kw):
    with pytest.raises(BootstrapError):
        HandOver(2, **kw)


def test_the_offsets_file_names_every_partition_once(tmp_path):
    f = tmp_path / "o.json"
    f.write_text('{"0": 5, "1": 0}')
    assert read_offsets_file(f, 2) == (5, 0)
    for bad in ('{"0": 5}', '{"0": -1, "1": 0}', '[1, 2]', '{"0": 5, "x": 1}', "{"):
        f.write_text(bad)
        with pytest.raises(BootstrapError, match="--until-offsets"):
            read_offsets_file(f, 2)
