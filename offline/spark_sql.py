"""Stateless §6 checks in Spark SQL for JSONL lines (the Spark engine's fast path).

A line is judged here only where Spark's JSON reader (Jackson) and orjson + EventParser are
certain to agree, as offline/scan.py does with Arrow; every other line takes the exact path
(`EventParser.parse_line`, in Python), so reasons and messages stay the parser's. Certain:

- the line is one JSON object by its bytes: `{` first, its only `}` last (Jackson reads
  `{..}{..}` as its first object; a nested or second object needs another `}`), no
  backslash (escapes are where parsers differ);
- the text is ASCII where it matters: Spark hands Jackson the line decoded with invalid UTF-8
  replaced (U+FFFD), which orjson refuses. Outside strings any such byte is a parse error;
  inside, event_id must be ASCII (octet_length = char_length) and event_type one of the
  configured (ASCII) names; a line with other fields must be ASCII throughout;
- Jackson parsed it with no field in error (the corrupt-record column is null: a field of the
  wrong JSON type, e.g. a float timestamp or a string user_id, marks the row);
- every key is one of the event's fields, once, not null: the line's colons number its
  non-null fields. So no other field can hold a number orjson refuses (one that overflows a
  double), and duplicates cannot differ between the parsers. Lines with other fields are
  certain only without a run of 100 digits or an exponent of 3 digits (a regex, paid only
  there) and with event_id and event_type named once, their values quoted;
- event_id and event_type were JSON strings: Jackson reads any token as text for a string
  column, so an id that reads as a number or boolean must be seen quoted in the line, and an
  event_type name that reads so is left to the exact path;
- and every check passes: rows that fail one go to the exact path for their reason.

Cheap string functions before the parse, no regex on every line (measured: Spark's
locate/instr/replace and regexes cost more than the JSON parse itself).
"""
from __future__ import annotations

import re

from features.events import (
    MAX_DWELL_SECONDS,
    MAX_EVENT_ID_CHARS,
    MAX_TIMESTAMP,
    MS_THRESHOLD,
    EventParser,
)

FAST_MAX_BYTES = 4096
_NUMBERS = r"[0-9]{100}|[eE][+-]?[0-9]{3}"
_TOKEN = re.compile(r"^([-+0-9.eE]+|true|false)$")
JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt",
                "allowSingleQuotes": "false", "allowNonNumericNumbers": "false",
                "allowNumericLeadingZeros": "false", "allowComments": "false",
                "allowUnquotedFieldNames": "false"}


def _schema():
    from pyspark.sql import types as T
    long, string = T.LongType(), T.StringType()
    return T.StructType([T.StructField("user_id", long), T.StructField("item_id", long),
                         T.StructField("timestamp", long), T.StructField("action_type", long),
                         T.StructField("event_type", string),
                         T.StructField("dwell_time", T.DoubleType()),
                         T.StructField("event_id", string), T.StructField("_corrupt", string)])


def _string_once(v, name: str):
    """The field's name appears once in the line and its value is a JSON string."""
    from pyspark.sql import functions as F
    key = _sql_str(f'"{name}"')
    return F.expr(f"locate({key}, value, locate({key}, value) + 1) = 0") & \
        v.rlike(f'"{name}" *: *"')


def _sql_str(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fast_events(lines, parser: EventParser, now: float):
    """`lines` (columns value: the line as a string, line: its number) with the columns `ok`
    (the line is certainly one valid event) and, where ok, the event: user, item, ts, action,
    dwell_ms (-1: none), event_id."""
    from pyspark.sql import functions as F
    v = F.col("value")
    # a second object on the line, or a nested one, needs a `}` before the last byte
    pre = F.expr(" AND ".join((
        f"octet_length(value) <= {FAST_MAX_BYTES}", "left(value, 1) = '{'",
        "locate('}', value) = char_length(value)", "instr(value, '\\\\') = 0")))
    df = lines.select("*", F.when(pre, F.from_json(v, _schema(), JSON_OPTIONS)).alias("j"))
    unit = parser.unit
    ms = "true" if unit == "ms" else "false" if unit == "s" else \
        f"j.timestamp >= {int(MS_THRESHOLD)}"
    seconds = f"(CASE WHEN {ms} THEN j.timestamp div 1000 ELSE j.timestamp END)"
    codes = ", ".join(str(c) for c in sorted(parser.action_codes))
    # a name that reads as a JSON token could have been one (not a string): exact path
    types = ", ".join(f"{_sql_str(k)}, {int(m)}" for k, m in sorted(parser.event_types.items())
                      if k.isascii() and not _TOKEN.match(k))
    mapped = f"try_element_at(map({types}), j.event_type)" if types else "CAST(NULL AS BIGINT)"
    fields = " + ".join(f"(CASE WHEN j.{f} IS NULL THEN 0 ELSE 1 END)" for f in (
        "user_id", "item_id", "timestamp", "action_type", "event_type", "dwell_time",
        "event_id"))
    colons = "(octet_length(value) - octet_length(replace(value, ':', '')))"
    ok = F.expr(f"""j IS NOT NULL AND j._corrupt IS NULL
        AND j.user_id >= 0 AND j.item_id >= 0 AND j.timestamp >= 0
        AND (j.action_type IS NOT NULL OR j.event_type IS NOT NULL)
        AND {seconds} < {MAX_TIMESTAMP} AND {seconds} <= {float(now + parser.max_skew)!r}D
        AND (j.dwell_time IS NULL OR (j.dwell_time >= 0 AND j.dwell_time <= {MAX_DWELL_SECONDS}))
        AND (j.action_type IS NULL OR j.action_type IN ({codes or 'NULL'}))
        AND (j.event_type IS NULL OR ({mapped} IS NOT NULL
             AND (j.action_type IS NULL OR j.action_type = {mapped})))
        AND (j.event_id IS NULL OR (char_length(j.event_id) <= {MAX_EVENT_ID_CHARS}
             AND octet_length(j.event_id) = char_length(j.event_id)))""")
    # expensive checks only where needed (CASE WHEN evaluates one branch)
    known_only = F.expr(f"{colons} = {fields}")
    others = ~v.rlike(_NUMBERS) & ~v.rlike(r"[^\x00-\x7f]") & \
        F.when(F.col("j.event_id").isNull(), True).otherwise(_string_once(v, "event_id")) & \
        F.when(F.col("j.event_type").isNull(), True).otherwise(_string_once(v, "event_type"))
    eid = F.col("j.event_id")
    # Jackson gives a number or boolean token as its text: such an id must be seen quoted
    token_like = eid.rlike(r"^[-+0-9.eE]+$") | eid.isin("true", "false")
    eid_string = F.when(eid.isNull() | ~token_like, True).otherwise(_string_once(v, "event_id"))
    ok = F.coalesce(ok & F.when(known_only, eid_string).otherwise(others), F.lit(False))
    return df.select(
        "*", ok.alias("ok"), F.col("j.user_id").alias("user"), F.col("j.item_id").alias("item"),
        F.expr(seconds).alias("ts"),
        F.expr(f"coalesce({mapped}, j.action_type)").alias("action"),
        F.expr("coalesce(try_cast(rint(j.dwell_time * 1000D) AS BIGINT), -1L)").alias("dwell_ms"),
        F.col("j.event_id").alias("event_id")).drop("j")


# ---------------------------------------------------------------- the Python steps, on Arrow

ROUTED = ("kind byte, user long, line long, sub long, ts long, item long, action long, "
          "dwell_ms long, event_id string, reason string, message string, original string")
RAN = ("kind byte, user long, line long, sub long, text string, reason string, "
       "original string")
EVENT, DEAD, COUNTS, PROFILE = 0, 1, 2, 3
_EVENT_COLS = ("user", "line", "sub", "ts", "item", "action", "dwell_ms", "event_id")


def _batch(cols: dict, n: int, schema):
    """A RecordBatch of `schema` from the given columns (the rest null)."""
    import pyarrow as pa
    return pa.RecordBatch.from_arrays(
        [cols[f.name] if f.name in cols else pa.nulls(n, f.type) for f in schema], schema=schema)


def route(batches, parser: EventParser, now: float, as_of: int | None, schema):
    """Stage 1's Python part: the fast rows' events as they are (after_as_of ones counted and
    dropped), the other lines through the exact path (`check_events`); per partition one
    COUNTS row (the stateless counts, as JSON)."""
    from collections import Counter

    import numpy as np
    import orjson
    import pyarrow as pa
    import pyarrow.compute as pc

    from offline.scan import check_events, iter_lines
    counts: Counter = Counter()
    for b in batches:
        ok = b.column("ok")
        fast = b.filter(ok)
        counts["events"] += fast.num_rows
        if as_of is not None and fast.num_rows:
            late = pc.greater(fast.column("ts"), as_of)
            counts["after_as_of"] += pc.sum(late).as_py() or 0
            fast = fast.filter(pc.invert(late))
        if fast.num_rows:
            n = fast.num_rows
            cols = {c: fast.column(c) for c in _EVENT_COLS if c != "sub"}
            cols |= {"kind": pa.array(np.zeros(n, dtype=np.int8)),
                     "sub": pa.array(np.zeros(n, dtype=np.int64))}
            yield _batch(cols, n, schema)
        slow = b.filter(pc.invert(ok))
        if not slow.num_rows:
            continue
        raw = zip(slow.column("line").to_pylist(), slow.column("raw").to_pylist())
        ev: list = []
        dead: list = []
        for good, item in check_events(parser, iter_lines(raw), now, as_of, None, counts):
            (ev if good else dead).append(item)
        if ev:
            e = [x[4] for x in ev]
            yield _batch({
                "kind": pa.array([EVENT] * len(ev), pa.int8()),
                "user": pa.array([x.user_id for x in e], pa.int64()),
                "line": pa.array([x[2] for x in ev], pa.int64()),
                "sub": pa.array([x[3] for x in ev], pa.int64()),
                "ts": pa.array([x.ts for x in e], pa.int64()),
                "item": pa.array([x.item_id for x in e], pa.int64()),
                "action": pa.array([x.action for x in e], pa.int64()),
                "dwell_ms": pa.array([-1 if x.dwell_ms is None else x.dwell_ms for x in e],
                                     pa.int64()),
                "event_id": pa.array([x.event_id for x in e], pa.string())}, len(ev), schema)
        if dead:
            yield _dead_batch(dead, schema)
    yield _batch({"kind": pa.array([COUNTS], pa.int8()), "user": pa.array([-1], pa.int64()),
                  "message": pa.array([orjson.dumps(dict(counts)).decode()])}, 1, schema)


def _dead_batch(dead: list, schema):
    import pyarrow as pa
    return _batch({"kind": pa.array([DEAD] * len(dead), pa.int8()),
                   "user": pa.array([-1] * len(dead), pa.int64()),
                   "line": pa.array([d[0] for d in dead], pa.int64()),
                   "sub": pa.array([d[1] for d in dead], pa.int64()),
                   "reason": pa.array([d[2] for d in dead], pa.string()),
                   "message": pa.array([d[3] for d in dead], pa.string()),
                   "original": pa.array([d[4] for d in dead], pa.string())}, len(dead), schema)


def run_users(batches, rt, as_of: int | None, trigger: str, updated_at: float, schema):
    """Stage 2's Python part: a partition's rows sorted by (user, line, sub); events through
    the core many users at a time; dead letters passed on; one COUNTS row at the end."""
    from collections import Counter

    import numpy as np
    import orjson
    import pyarrow as pa

    from offline.scan import Rows, hashes, object_array
    from offline.steps import USERS_PER_CALL, batch_users
    counts: Counter = Counter()
    pending: list = []         # event batches not yet run (their last user may go on)
    users = 0                  # distinct users in pending (at most one more than run)

    def run(tab):
        ids = object_array(tab.column("event_id").to_pylist())
        cols = {c: tab.column(c).to_numpy() for c in ("user", "line", "sub", "ts", "item",
                                                       "action", "dwell_ms")}
        cols |= {"order": np.zeros(tab.num_rows, dtype=np.int64), "eid_hash": hashes(ids)}
        dead: list = []
        out = batch_users(rt, Rows(cols, ids), as_of, trigger, updated_at, counts, dead)
        if out:
            yield _batch({"kind": pa.array([PROFILE] * len(out), pa.int8()),
                          "user": pa.array([u for u, _ in out], pa.int64()),
                          "text": pa.array([line.decode() for _, line in out], pa.string())},
                         len(out), schema)
        if dead:
            yield _dead(dead, schema)

    for b in batches:
        kind = b.column("kind").to_numpy()
        if (kind != EVENT).any():
            for r in b.filter(pa.array(kind != EVENT)).to_pylist():
                if r["kind"] == COUNTS:
                    counts.update(orjson.loads(r["message"]))
                else:
                    yield _dead([(r["line"], r["sub"], r["reason"], r["message"],
                                  r["original"])], schema)
            b = b.filter(pa.array(kind == EVENT))
        if not b.num_rows:
            continue
        user = b.column("user").to_numpy()
        users += int(np.count_nonzero(user[1:] != user[:-1])) + 1
        if pending and pending[-1].column("user")[-1].as_py() == int(user[0]):
            users -= 1                      # the same user goes on in this batch
        pending.append(b)
        if users <= USERS_PER_CALL:
            continue
        tab = pa.Table.from_batches(pending).combine_chunks()
        u = tab.column("user").to_numpy()
        cut = int(np.flatnonzero(u != u[-1])[-1]) + 1      # the last user may go on
        yield from run(tab.slice(0, cut))
        pending, users = tab.slice(cut).to_batches(), 1
    if pending:
        yield from run(pa.Table.from_batches(pending).combine_chunks())
    yield _batch({"kind": pa.array([COUNTS], pa.int8()), "user": pa.array([-1], pa.int64()),
                  "text": pa.array([orjson.dumps(dict(counts)).decode()])}, 1, schema)


def _dead(dead: list, schema):
    """Dead letters (line, sub, reason, message, original) as a batch of RAN."""
    import pyarrow as pa
    return _batch({"kind": pa.array([DEAD] * len(dead), pa.int8()),
                   "user": pa.array([-1] * len(dead), pa.int64()),
                   "line": pa.array([d[0] for d in dead], pa.int64()),
                   "sub": pa.array([d[1] for d in dead], pa.int64()),
                   "text": pa.array([d[3] for d in dead], pa.string()),
                   "reason": pa.array([d[2] for d in dead], pa.string()),
                   "original": pa.array([d[4] for d in dead], pa.string())}, len(dead), schema)
