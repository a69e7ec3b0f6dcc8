"""The steps every engine runs after validation (offline.scan): users' events through the core
(offline.core) into profile records or point-in-time profiles. The local engine and the Spark
engine call these same functions: `batch_users` and `training_users` take many users' events
as columns (`offline.scan.Rows`); Spark shuffles event rows as flat tuples (`row_to_flat`,
`rows_from_flat`).

An event row is a tuple (user_id, order, line, sub, event):
`order` is the order column's value (None without one), `line` the input line (row) number and
`sub` the event's place among the events of one TAAC line; a user's log order is (order, line,
sub). A dead letter is a tuple (line, sub, reason, message, original).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import orjson

from features.profile import Profile
from features.runtime import FeatureRuntime
from offline import OfflineError, core
from offline.formats import original_text
from offline.scan import Rows, hashes, numbered

EventRow = tuple
DeadLetter = tuple
MIX = 0x9E3779B97F4A7C15


def partition_of(user_id: int, partitions: int) -> int:
    """A user's partition (a multiplicative hash: consecutive ids spread evenly)."""
    return (((user_id * MIX) & 0xFFFFFFFFFFFFFFFF) >> 33) % partitions


def partitions_of(user_ids: np.ndarray, partitions: int) -> np.ndarray:
    """`partition_of` for an array of user ids (uint64 products wrap as the mask does)."""
    h = (user_ids.astype(np.uint64) * np.uint64(MIX)) >> np.uint64(33)
    return (h % np.uint64(partitions)).astype(np.int64)


def check_order_by(fmt: str, order_by: str | None) -> None:
    if order_by is not None and fmt != "parquet":
        raise OfflineError("--order-by names a column of Parquet events; a JSONL file's "
                           "order is its line order")


def row_to_flat(r: EventRow) -> tuple:
    """An event row as plain values, how rows travel between processes (JSON files between
    the local engine's phases; Spark's shuffle, where pickling an Event costs ~3x a tuple)."""
    ev = r[4]
    return (r[0], r[1], r[2], r[3], ev.item_id, ev.ts, ev.action, ev.dwell_ms, ev.event_id)


def originals(rows: Iterable[tuple[int, bytes | dict]], wanted: set[tuple[int, int]]
              ) -> dict[tuple[int, int], str]:
    """{(line, sub): original} of the wanted events among the input rows (line, raw)."""
    lines = {w[0] for w in wanted}
    return {(line, sub): original_text(raw) for line, sub, raw in numbered(rows)
            if line in lines and (line, sub) in wanted}


def fill_originals(rows: Iterable[tuple[int, bytes | dict]], dead: list[DeadLetter]
                   ) -> list[DeadLetter]:
    """Dead letters with their original filled in from the input rows (line, raw)."""
    wanted = {(d[0], d[1]) for d in dead if d[4] is None}
    if not wanted:
        return dead
    found = originals(rows, wanted)
    return [d if d[4] is not None else (*d[:4], found.get((d[0], d[1]), "")) for d in dead]


# ---------------------------------------------------------------- training sets

PROFILE_FIELDS = ("as_of", "features", "interest_tags", "behavior_preferences",
                  "activity_level", "user_type", "confidence")
MAX_USER_ID = 2 ** 63
MAX_TS = 2 ** 40


def profile_fields(p: Profile) -> dict[str, Any]:
    """The §7 fields a training row carries (not version, trigger, updated_at: they describe a
    publish, not the profile)."""
    return {"as_of": p.as_of, "features": p.features, "interest_tags": p.interest_tags,
            "behavior_preferences": p.behavior_preferences,
            "activity_level": p.activity_level, "user_type": p.user_type,
            "confidence": p.confidence}


def label_key(label: Any, where: str) -> tuple[int, int]:
    """(user_id, as_of) of a label row: user_id an integer id, ts Unix seconds (a fraction is
    floored, as for events). Anything else stops the run: a training set missing rows would
    mislead more than it helps."""
    if not isinstance(label, dict):
        raise OfflineError(f"{where}: a label must be an object with user_id and ts")
    for name in PROFILE_FIELDS:
        if name in label:
            raise OfflineError(f"{where}: label column {name!r} would be overwritten by the "
                               "profile field of that name; rename it")
    uid: Any = label.get("user_id")
    ts: Any = label.get("ts")
    if type(uid) is not int or not 0 <= uid < MAX_USER_ID:
        raise OfflineError(f"{where}: user_id {uid!r} is not an integer id")
    if type(ts) not in (int, float) or not 0 <= ts < MAX_TS:
        raise OfflineError(f"{where}: ts {ts!r} is not a time in Unix seconds")
    return uid, int(ts // 1)


# ---------------------------------------------------------------- many users as columns

USERS_PER_CALL = 4096         # users evaluated together (the evaluation's arrays stay small)


def in_log_order(rows: Rows, ordered_by_column: bool) -> Rows:
    """Rows (in line order) grouped by user, users ascending, each user's in log order: line
    order, or (order column, line, sub) with one."""
    c = rows.cols
    idx = np.lexsort((c["order"], c["user"])) if ordered_by_column else \
        np.argsort(c["user"], kind="stable")
    return rows.take(idx, lazy_ids=True)


def user_slices(user: np.ndarray, per: int = USERS_PER_CALL) -> Iterator[slice]:
    """Row ranges of at most `per` users each (rows grouped by user)."""
    starts = np.flatnonzero(np.concatenate(([True], user[1:] != user[:-1]))) if len(user) \
        else np.zeros(0, dtype=np.int64)
    bounds = np.append(starts[::per], len(user)).tolist()
    for a, b in zip(bounds, bounds[1:]):
        yield slice(a, b)


def to_log(rows: Rows, sl: slice = slice(None)) -> core.Log:
    c = rows.cols
    return core.Log(c["user"][sl], c["ts"][sl], c["item"][sl], c["action"][sl],
                    c["dwell_ms"][sl], c["eid_hash"][sl], rows.event_id[sl])


def batch_users(rt: FeatureRuntime, rows: Rows, as_of: int | None, trigger: str,
                updated_at: float, counts: Counter, dead: list[DeadLetter]
                ) -> list[tuple[int, bytes]]:
    """The batch path for every user of `rows` (grouped by user, users ascending, log order):
    [(user_id, its §7 record as a JSON line)] in user order. too_late events go to `dead`
    without their original (None), as `batch_user`'s do."""
    out: list[tuple[int, bytes]] = []
    line, sub = rows.cols["line"], rows.cols["sub"]
    for sl in user_slices(rows.cols["user"]):
        log = to_log(rows, sl)
        run = core.run_users(rt, log, as_of)
        counts["applied"] += run.applied
        counts["duplicates"] += run.duplicates
        counts["users"] += len(run.user_ids)
        if run.too_late:
            counts["rejected:too_late"] += len(run.too_late)
        for i, t_before in run.too_late:
            dead.append((int(line[sl][i]), int(sub[sl][i]), "too_late",
                         f"day of timestamp {int(log.ts[i])} is before the user's 30-day "
                         f"window (user T {t_before})", None))
        dumps = orjson.dumps
        out += [(uid, dumps(p.to_record(0, trigger, updated_at)))
                for uid, p in zip(run.user_ids, run.profiles)]
    return out


def training_users(rt: FeatureRuntime, rows: Rows, wanted: Mapping[int, Iterable[int]]
                   ) -> dict[tuple[int, int], dict[str, Any]]:
    """{(user_id, as_of): profile fields} for each wanted user and time; rows grouped by user
    (users ascending), each user's in log order. Users without events get the default
    profile."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    user = rows.cols["user"]

    def run(log: core.Log, users: Iterable[int]) -> None:
        lu = [u for u in users for _ in wanted[u]]
        lt = [t for u in users for t in sorted(wanted[u])]
        for u, t, p in zip(lu, lt, core.profiles_many_at(rt, log, lu, lt)):
            out[(u, t)] = profile_fields(p)

    for sl in user_slices(user):
        here = np.unique(user[sl]).tolist()
        users = [u for u in here if u in wanted]
        if users:
            run(to_log(rows, sl), users)
    absent = sorted(set(wanted) - set(np.unique(user).tolist()))
    for a in range(0, len(absent), USERS_PER_CALL):
        run(to_log(Rows.empty()), absent[a:a + USERS_PER_CALL])
    return out


def rows_from_flat(flat: list[tuple]) -> Rows:
    """Rows from `row_to_flat` tuples (how Spark shuffles them)."""
    if not flat:
        return Rows.empty()
    u, o, line, sub, item, ts, action, dwell, eid = zip(*flat)
    ids = list(eid)
    return Rows({"user": np.array(u, dtype=np.int64),
                 "order": np.array([0 if x is None else x for x in o], dtype=np.int64),
                 "line": np.array(line, dtype=np.int64), "sub": np.array(sub, dtype=np.int64),
                 "ts": np.array(ts, dtype=np.int64), "item": np.array(item, dtype=np.int64),
                 "action": np.array(action, dtype=np.int64),
                 "dwell_ms": np.array([-1 if d is None else d for d in dwell], dtype=np.int64),
                 "eid_hash": hashes(ids)}, ids)
