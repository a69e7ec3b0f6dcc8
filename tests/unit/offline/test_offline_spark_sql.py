"""The Spark engine's Spark SQL path (offline.spark_sql, spark.run_batch_sql) against the exact
parser and against the RDD path it replaced (spark.run_batch_rdd, kept as the reference)."""
from __future__ import annotations

import random

import orjson
import pytest

from features.config import parse_config
from features.events import Event, EventParser
from offline import spark as spark_engine
from offline import spark_sql
from offline.formats import dlq_path, read_records
from tests.offline_data import dead_letter_keys, without_updated_at
from tests.unit.offline.test_offline_scan import NOW, TRICKY, lines_for, mutate

MASTER = "local[2]"
T0 = 1_764_000_000
D = 86400

SPARK_TRICKY = [
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"12345"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":12345}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"true"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":true}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":1.5}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"-1e5"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"a:b"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"a",'
    b'"event_id":5}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"7",'
    b'"event_id":7}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":5,'
    b'"event_id":"a"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"x\x80y"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":"x\xef\xbf\xbd"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"q":"x\x80y"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"event_type":"click","event_type":"view"}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"event_type":"click","event_type":1}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":1,"event_type":null}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":null}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"event_id":null}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":1e99}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":1e999}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":"a","y":[1]}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"USER_ID":5}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":1e2}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":1E-2}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"dwell_time":2.0005}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0}{}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":{"a":1}}',
    b"{'user_id':1,'item_id':2,'timestamp':1764000000,'action_type':0}",
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":tru}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":01}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0 ,"x" : 1.}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":+1}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":.5}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":INF}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,"x":/*c*/1}',
    b'{"user_id":1,"item_id":2,"timestamp":1764000000,"action_type":0,x:1}',
]


@pytest.fixture(scope="module")
def spark(spark_session):
    session = spark_session
    # several blocks over several partitions: line numbers must come from the files
    session.conf.set("spark.sql.files.maxPartitionBytes", "100000")
    session.conf.set("spark.sql.files.openCostInBytes", "0")
    return session


def test_a_line_spark_sql_accepts_is_the_event_the_parser_makes(spark, tmp_path):
    """Every line the fast path calls valid is valid to EventParser with the same values;
    plain lines take the fast path."""
    from pyspark.sql import functions as F
    rng = random.Random(5)
    lines = TRICKY + SPARK_TRICKY + lines_for(rng, 3000)
    lines += [mutate(rng, rng.choice(SPARK_TRICKY)) for _ in range(1500)]
    lines = [b.replace(b"\n", b" ") for b in lines]
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = parse_config({"mapping_index": str(tmp_path / "index.json")}, env={})
    parser = EventParser(cfg.events)
    text = spark.read.option("lineSep", "\n").text(str(path)).select(
        "value", F.lit(0).alias("line"), F.col("value").cast("binary").alias("raw"))
    got = spark_sql.fast_events(text, parser, NOW).collect()
    assert len(got) == len(lines)
    fast = 0
    for r in got:
        if not r["ok"]:
            continue
        fast += 1
        want = parser.parse_line(bytes(r["raw"]).strip(), NOW)
        assert isinstance(want, Event), (bytes(r["raw"]), want)
        dwell_ms = -1 if want.dwell_ms is None else want.dwell_ms
        assert (want.user_id, want.item_id, want.ts, want.action, dwell_ms, want.event_id) == \
            (r["user"], r["item"], r["ts"], r["action"], r["dwell_ms"], r["event_id"]), \
            bytes(r["raw"])
    assert fast > 2000


def events_file(path, seed: int, n: int = 3000):
    """Users' events out of order, too late, re-sent (same and other timestamps), mixed with
    tricky and mutated lines, TAAC lines and blank lines."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        uid = rng.randrange(1, 60)
        ev = {"user_id": uid, "item_id": rng.randrange(1, 40),
              "timestamp": T0 + rng.randrange(-45 * D, 0), "action_type": rng.choice([0, 1, 2])}
        if rng.random() < 0.5:
            ev["event_id"] = f"e{rng.randrange(200)}"
        if rng.random() < 0.3:
            ev["dwell_time"] = rng.choice([0, 12.5, rng.random() * 100, 86400])
        if rng.random() < 0.2:
            del ev["action_type"]
            ev["event_type"] = rng.choice(["view", "click", "purchase"])
        line = orjson.dumps(ev)
        if r < 0.8:
            out.append(line)
        elif r < 0.87:
            out.append(mutate(rng, line))
        elif r < 0.95:
            out.append(rng.choice(TRICKY + SPARK_TRICKY))
        elif r < 0.97:
            out.append(orjson.dumps([[uid, rng.randrange(1, 40), None, None, 1,
                                      T0 - rng.randrange(0, 40 * D)] for _ in range(3)]))
        else:
            out.append(rng.choice([b"", b"  ", line + b"\r", b" " + line]))
    path.write_bytes(b"\n".join(b.replace(b"\n", b" ") for b in out) + b"\n")
    return path


@pytest.mark.parametrize("seed,as_of", [(1, None), (2, T0 - 10 * D)])
def test_spark_sql_batch_equals_the_rdd_path(spark, tmp_path, seed, as_of):
    events = events_file(tmp_path / "events.jsonl", seed)
    cfg = parse_config({"mapping_index": str(tmp_path / "index.json")}, env={})
    outs = {}
    for name, fn in (("sql", spark_engine.run_batch_sql), ("rdd", spark_engine.run_batch_rdd)):
        out = tmp_path / name / "profiles.jsonl"
        report = fn(cfg, None, str(events), out, as_of=as_of, master=MASTER,
                    progress_stream=None)
        outs[name] = (report, without_updated_at(read_records(out)),
                      dead_letter_keys(dlq_path(out, "jsonl")))
    (a, pa, da), (b, pb, db) = outs["sql"], outs["rdd"]
    assert pa == pb and da == db
    assert (a.events, a.applied, a.duplicates, a.after_as_of, a.users, a.rejected) == \
        (b.events, b.applied, b.duplicates, b.after_as_of, b.users, b.rejected)
    assert a.rejected["too_late"] > 0 and a.duplicates > 0
    assert (a.after_as_of > 0) == (as_of is not None)


def test_spark_sql_batch_parquet_out_equals_the_rdd_path(spark, tmp_path):
    events = events_file(tmp_path / "events.jsonl", 3, n=800)
    cfg = parse_config({"mapping_index": str(tmp_path / "index.json")}, env={})
    for fn in (spark_engine.run_batch_sql, spark_engine.run_batch_rdd):
        fn(cfg, None, str(events), tmp_path / f"{fn.__name__}.parquet", master=MASTER,
           progress_stream=None)
    assert without_updated_at(read_records(tmp_path / "run_batch_sql.parquet")) == \
        without_updated_at(read_records(tmp_path / "run_batch_rdd.parquet"))
    assert dead_letter_keys(tmp_path / "run_batch_sql.dlq.parquet") == \
        dead_letter_keys(tmp_path / "run_batch_rdd.dlq.parquet")
