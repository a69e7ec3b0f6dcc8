"""The Spark engine (`--engine spark`): the batch path and training sets on a Spark cluster.

The same steps as the local engine (offline.steps), as RDD stages: number the input rows (the
line number of a JSONL line, the row number of a Parquet row, both counted from the files
themselves, never from the order Spark delivers rows in), validate them, group the valid events
by user, sort each user's events into log order (the order column, then line), and run the
user through the core (offline.core). Outputs are Spark datasets: a folder of part files whose
order, part by part, is user order (profiles), line order (dead letters) or label order
(training rows).

The compiled config and item catalog are built once on the driver (which reads ITEMS) and
broadcast; driver and executors exchange them and the rows with PySpark's own serialization.
"""
from __future__ import annotations

import functools
import os
import shutil
import sys
import time
from collections import Counter
from itertools import groupby
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

from features.config import ProfileConfig
from offline import OfflineError
from offline.batch_io import BatchReport, iter_events
from offline.formats import DEAD_LETTER_FIELDS, detect, dlq_path, row_object
from offline.local import (
    TrainingReport,
    batch_report,
    feature_ids,
    fill_results_dead,
    runtime,
)
from offline.scan import check_events, iter_lines
from offline.steps import (
    PROFILE_FIELDS,
    USERS_PER_CALL,
    batch_users,
    check_order_by,
    label_key,
    originals,
    row_to_flat,
    rows_from_flat,
    training_users,
)

ORDER_COLUMN_MISSING = "the order column {!r} is not a column of {}"


def session(master: str = "local[*]", app: str = "profiles-offline"):
    """A SparkSession on `master` (an existing one is reused), or a one-sentence error when
    PySpark or a Java runtime is missing."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise OfflineError("--engine spark needs PySpark, which is not installed: "
                           "pip install 'user-profiles[spark]'") from None
    java_home = os.environ.get("JAVA_HOME")
    if not shutil.which("java") and not (java_home and
                                         Path(java_home, "bin", "java").exists()):
        raise OfflineError("--engine spark needs a Java runtime (JDK 17 or newer), and none is "
                           "on PATH or in JAVA_HOME")
    if master.startswith("local"):
        # executors on this machine run this interpreter (and see this install)
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app)
    if master.startswith("local"):
        # every executor is a thread of the driver's JVM: its heap holds every cached block
        # and task result (Spark's default, 1g, ran out on a 100,000-user bootstrap)
        builder = builder.config("spark.driver.memory",
                                 os.environ.get("PROFILES_SPARK_DRIVER_MEMORY", "4g"))
    spark = (builder
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.session.timeZone", "UTC")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def said_plainly(fn):
    """An OfflineError raised on an executor reaches the caller as itself, not inside a Java
    stack trace."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OfflineError:
            raise
        except Exception as e:
            marker = "offline.OfflineError: "
            text = str(e)
            if marker in text:
                raise OfflineError(text.split(marker, 1)[1].splitlines()[0]) from None
            if type(e).__name__ == "AnalysisException":      # e.g. [PATH_NOT_FOUND] ...
                raise OfflineError(text.splitlines()[0]) from None
            raise
    return wrapper


# ---------------------------------------------------------------- numbered input rows

def numbered_rows(spark, path: str, fmt: str, keep_nulls: bool = False):
    """An RDD of (line, raw): a JSONL line's bytes, or a Parquet row as a dict (without its
    null columns unless keep_nulls). `line` counts from 1 over the files in path order."""
    from pyspark.sql import functions as F
    meta = F.col("_metadata.file_path").alias("_f")
    if fmt == "jsonl":
        df = spark.read.option("lineSep", "\n").text(path).select(
            F.col("value").cast("binary").alias("_raw"), meta,
            F.col("_metadata.file_block_start").alias("_b"))
        firsts = _first_lines(df.groupBy("_f", "_b").count().collect(), ("_f", "_b"))
        first = spark.sparkContext.broadcast(firsts)

        def number(rows: Iterator) -> Iterator[tuple[int, bytes]]:
            seen: dict = {}              # a block's lines come in file order, in one partition
            for raw, f, b in rows:
                i = seen.get((f, b), 0)
                seen[(f, b)] = i + 1
                yield first.value[(f, b)] + i, bytes(raw)
        return df.rdd.mapPartitions(number)
    df = spark.read.parquet(path)
    cols = df.columns
    df = df.select(F.struct(*[F.col(f"`{c}`") for c in cols]).alias("_row"), meta,
                   F.col("_metadata.row_index").alias("_i"))
    firsts = _first_lines(df.groupBy("_f").count().collect(), ("_f",))
    first = spark.sparkContext.broadcast(firsts)

    def to_row(r) -> tuple[int, dict]:
        row = r["_row"].asDict(recursive=True)
        return first.value[(r["_f"],)] + r["_i"], row if keep_nulls else row_object(row)
    return df.rdd.map(to_row)


def _first_lines(counts, key: tuple[str, ...]) -> dict[tuple, int]:
    """{block: the line number of its first line}, blocks in (file path, offset) order."""
    out, line = {}, 1
    for r in sorted(counts, key=lambda r: tuple(r[k] for k in key)):
        out[tuple(r[k] for k in key)] = line
        line += r["count"]
    return out


def event_rows(spark, path: str, fmt: str, order_by: str | None):
    """(line, raw event) with TAAC lines expanded, as the local engine reads them."""
    check_order_by(fmt, order_by)
    rows = numbered_rows(spark, path, fmt)
    if fmt == "jsonl":
        return rows.flatMap(lambda lr: iter_events(iter([lr[1]]), lr[0]))
    if order_by is not None and order_by not in spark.read.parquet(path).columns:
        raise OfflineError(ORDER_COLUMN_MISSING.format(order_by, path))
    return rows


# ---------------------------------------------------------------- the stages

def _checked(rt, rows, now: float, as_of: int | None, order_by: str | None):
    """Stage 1, persisted: ("e", ((user_id, 1, order, line, sub), event row)) per valid
    event, ("d", dead letter), and per partition ("c", counts) and ("u", (min, max) user id)."""
    from pyspark import StorageLevel

    def stage(part: Iterator) -> Iterator:
        counts: Counter = Counter()
        lo = hi = None
        for ok, item in check_events(rt.value.parser, part, now, as_of, order_by, counts):
            if ok:
                uid = item[0]
                lo = uid if lo is None or uid < lo else lo
                hi = uid if hi is None or uid > hi else hi
                yield "e", ((uid, 1, item[1], item[2], item[3]), row_to_flat(item))
            else:
                yield "d", item
        yield "c", dict(counts)
        if lo is not None:
            yield "u", (lo, hi)
    return rows.mapPartitions(stage).persist(StorageLevel.MEMORY_AND_DISK)


def _batches(flat_rows: Iterator, users: int = USERS_PER_CALL) -> Iterator[list]:
    """Flat event rows (grouped by user) in lists of whole users, `users` users each."""
    batch: list = []
    n, prev = 0, None
    for r in flat_rows:
        if r[0] != prev:
            if n == users:
                yield batch
                batch, n = [], 0
            prev = r[0]
            n += 1
        batch.append(r)
    if batch:
        yield batch


def _tagged(rdd, tag: str):
    return rdd.filter(lambda x: x[0] == tag).map(lambda x: x[1])


def _counts(rdd) -> Counter:
    return _counts_and_span(rdd)[0]


def _counts_and_span(rdd) -> tuple[Counter, tuple[int, int]]:
    """The stage's summed counts and the (min, max) user id of its events, in one job."""
    total: Counter = Counter()
    spans = []
    for tag, value in rdd.filter(lambda x: x[0] in ("c", "u")).collect():
        if tag == "c":
            total.update(value)
        else:
            spans.append(value)
    return total, ((min(s[0] for s in spans), max(s[1] for s in spans)) if spans else (0, 0))


class RangeOfFirst:
    """Partition by the key's first element over [lo, hi] in equal ranges: partitions in order
    hold keys in order, so a sort within partitions is a total sort (no sampling pass)."""

    def __init__(self, lo: int, hi: int, n: int):
        self.lo, self.width, self.n = lo, hi - lo + 1, n

    def __call__(self, key) -> int:
        return min(self.n - 1, max(0, (key[0] - self.lo) * self.n // self.width))


def _sorted_by_first(rdd, span: tuple[int, int], n: int):
    """(key, value) pairs in key order, partitioned by ranges of key[0]."""
    return rdd.repartitionAndSortWithinPartitions(n, RangeOfFirst(*span, n))


def _partitions(spark) -> int:
    return max(2, spark.sparkContext.defaultParallelism)


def _originals_of(spark, rows, missing: list[tuple[int, int]]) -> dict:
    """{(line, sub): original} of those input rows."""
    wanted = spark.sparkContext.broadcast(set(missing))
    lines = spark.sparkContext.broadcast({w[0] for w in missing})
    return dict(rows.filter(lambda lr: lr[0] in lines.value)
                .mapPartitions(lambda part: originals(part, wanted.value).items())
                .collect())


def _filled(spark, rows, dead: list) -> list:
    """Dead letters (on the driver) with the original of each too_late one looked up in the
    input rows."""
    missing = [(d[0], d[1]) for d in dead if d[4] is None]
    if not missing:
        return dead
    found = _originals_of(spark, rows, missing)
    return [d if d[4] is not None else (*d[:4], found.get((d[0], d[1]), "")) for d in dead]


EVENTS_PER_RESULT_PARTITION = 50_000


@said_plainly
def map_users(cfg: ProfileConfig, items: str | Path | None, events: str, fn, args: tuple = (),
              until: int | None = None, master: str = "local[*]",
              events_format: str | None = None, order_by: str | None = None,
              progress_stream: IO | None = sys.stderr, label: str = "scan",
              done=None) -> tuple[Counter, list, list]:
    """`offline.local.map_users` on Spark: `fn(runtime, rows, *args)` on the executors over
    the valid events (up to `until`) in shares of whole users, each user's in log order.
    Returns (counts, dead letters with originals, the results on the driver). A result with a
    `dead` list (too_late dead letters without their original) gets them filled in; `done(k,
    n, result)` is told of each partition's results as they come."""
    spark = session(master)
    rt = spark.sparkContext.broadcast(runtime(cfg, items))
    rows = event_rows(spark, str(events), detect(events, events_format), order_by)
    checked = _checked(rt, rows, time.time(), until, order_by)
    counts, span = _counts_and_span(checked)
    _say(progress_stream, f"{label}: {counts['events']:,} events read and checked on {master}")

    def users(part: Iterator) -> Iterator:
        for flat in _batches(kv[1] for kv in part):
            yield fn(rt.value, rows_from_flat(flat), *args)

    # many partitions, fetched one at a time: the driver's JVM never holds every result
    n = max(_partitions(spark), counts["events"] // EVENTS_PER_RESULT_PARTITION)
    ran = _sorted_by_first(_tagged(checked, "e"), span, n).mapPartitions(users)
    results = []
    for r in ran.toLocalIterator():
        results.append(r)
        if done is not None:
            done(len(results), None, r)
    dead = _tagged(checked, "d").collect()
    fill_results_dead(results, lambda late: _filled(spark, rows, late))
    checked.unpersist()
    return counts, dead, results


def _dead_letters(spark, rows, dead_rdd, out: str, fmt: str) -> None:
    """Dead letters in line order (one part: they are few), too_late ones with their original
    looked up again. They are kept while written (finding them is a pass over every row)."""
    from pyspark import StorageLevel
    dead_rdd = dead_rdd.persist(StorageLevel.MEMORY_AND_DISK)
    missing = dead_rdd.filter(lambda d: d[4] is None).map(lambda d: (d[0], d[1])).collect()
    dead = dead_rdd
    if missing:
        found = _originals_of(spark, rows, missing)
        dead = dead_rdd.map(lambda d: d if d[4] is not None else
                            (*d[:4], found.get((d[0], d[1]), "")))
    records = (dead.sortBy(lambda d: (d[0], d[1]), numPartitions=1)
               .map(lambda d: {"reason": d[2], "message": d[3], "line": d[0],
                               "original": d[4]}))
    _write(spark, records, dlq_path(out, fmt), fmt, _dead_letter_schema())
    dead_rdd.unpersist()


# ---------------------------------------------------------------- writing

def _write(spark, records, path: str | Path, fmt: str, schema, lines=None) -> None:
    """Records (dicts) in their RDD order to a folder of part files; `lines` (JSON line bytes)
    are written as they are when given."""
    if fmt == "jsonl":
        text = lines if lines is not None else records.map(lambda r: orjson.dumps(r, default=str))
        df = spark.createDataFrame(text.map(lambda b: (b.decode(),)), "value string")
        df.write.mode("overwrite").text(str(path))
        return
    if records is None:
        records = lines.map(orjson.loads)
    spark.createDataFrame(records, schema).write.mode("overwrite").parquet(str(path))


def _profile_schema(ids: list[str]):
    from pyspark.sql import types as T
    ints = T.ArrayType(T.LongType())
    return T.StructType([
        T.StructField("user_id", T.LongType()), T.StructField("version", T.LongType()),
        T.StructField("as_of", T.LongType()), T.StructField("trigger", T.StringType()),
        T.StructField("features", T.StructType([T.StructField(f, ints) for f in ids])),
        T.StructField("interest_tags", T.ArrayType(T.StringType())),
        T.StructField("behavior_preferences", T.ArrayType(T.StringType())),
        T.StructField("activity_level", T.LongType()), T.StructField("user_type", T.LongType()),
        T.StructField("confidence", T.DoubleType()), T.StructField("updated_at", T.DoubleType())])


def _dead_letter_schema():
    from pyspark.sql import types as T
    kinds = {"reason": T.StringType(), "message": T.StringType(), "line": T.LongType(),
             "original": T.StringType()}
    return T.StructType([T.StructField(n, kinds[n]) for n in DEAD_LETTER_FIELDS])


# ---------------------------------------------------------------- the commands

@said_plainly
def run_batch(cfg: ProfileConfig, items: str | Path | None, events: str, out: str | Path,
              as_of: int | None = None, master: str = "local[*]",
              events_format: str | None = None, out_format: str | None = None,
              order_by: str | None = None, progress_stream: IO | None = sys.stderr,
              trigger: str | None = None) -> BatchReport:
    """The batch path: JSONL events in Spark SQL (`run_batch_sql`), Parquet events on the RDD
    path (`run_batch_rdd`, also the reference the SQL path is tested against)."""
    fn = run_batch_sql if detect(events, events_format) == "jsonl" else run_batch_rdd
    return fn(cfg, items, events, out, as_of, master, events_format, out_format, order_by,
              progress_stream, trigger)


@said_plainly
def run_batch_rdd(cfg: ProfileConfig, items: str | Path | None, events: str, out: str | Path,
                  as_of: int | None = None, master: str = "local[*]",
                  events_format: str | None = None, out_format: str | None = None,
                  order_by: str | None = None, progress_stream: IO | None = sys.stderr,
                  trigger: str | None = None) -> BatchReport:
    """The batch path as RDD stages: every row validated and shuffled as Python objects."""
    t0 = time.perf_counter()
    spark = session(master)
    out = str(out)
    fmt_in, fmt_out = detect(events, events_format), detect(out, out_format)
    rt_local = runtime(cfg, items)
    rt = spark.sparkContext.broadcast(rt_local)
    rows = event_rows(spark, str(events), fmt_in, order_by)
    checked = _checked(rt, rows, time.time(), as_of, order_by)
    counts, span = _counts_and_span(checked)
    _say(progress_stream, f"batch: {counts['events']:,} events read and checked on {master}")
    trigger = trigger or ("event" if as_of is None else "weekly")
    updated_at = time.time()

    def users(part: Iterator) -> Iterator:
        """The partition's users (in user order, each in log order) through the core, many
        at a time."""
        c: Counter = Counter()
        for flat in _batches(kv[1] for kv in part):
            dead: list = []
            for _, line in batch_users(rt.value, rows_from_flat(flat), as_of, trigger,
                                       updated_at, c, dead):
                yield "p", line
            for d in dead:
                yield "d", d
        yield "c", dict(c)

    from pyspark import StorageLevel
    ran = (_sorted_by_first(_tagged(checked, "e"), span, _partitions(spark))
           .mapPartitions(users).persist(StorageLevel.MEMORY_AND_DISK))
    counts.update(_counts(ran))
    _write(spark, None, out, fmt_out, _profile_schema(feature_ids(rt_local)),
           lines=_tagged(ran, "p"))
    _dead_letters(spark, rows, _tagged(checked.union(ran), "d"), out, fmt_out)
    checked.unpersist()
    ran.unpersist()
    report = batch_report(counts, time.perf_counter() - t0)
    _say(progress_stream, f"batch: {report.users:,} profiles written")
    return report


@said_plainly
def run_batch_sql(cfg: ProfileConfig, items: str | Path | None, events: str, out: str | Path,
                  as_of: int | None = None, master: str = "local[*]",
                  events_format: str | None = None, out_format: str | None = None,
                  order_by: str | None = None, progress_stream: IO | None = sys.stderr,
                  trigger: str | None = None) -> BatchReport:
    """The batch path of JSONL events with Spark SQL doing what it does natively: reading,
    numbering, parsing and checking lines (offline.spark_sql), the shuffle and the sort. Python
    sees Arrow batches: the lines Spark cannot judge with certainty (the exact path), then each
    partition's events sorted by user, many users per call to the core."""
    from pyspark.sql import functions as F

    from offline import spark_sql
    t0 = time.perf_counter()
    spark = session(master)
    out = str(out)
    fmt_in, fmt_out = detect(events, events_format), detect(out, out_format)
    check_order_by(fmt_in, order_by)
    rt_local = runtime(cfg, items)
    rt = spark.sparkContext.broadcast(rt_local)
    parser, now = rt_local.parser, time.time()
    trigger = trigger or ("event" if as_of is None else "weekly")
    updated_at = time.time()
    lines = _numbered_lines(spark, str(events))
    checked = spark_sql.fast_events(lines, parser, now).select(
        "ok", "line", "user", "item", "ts", "action", "dwell_ms", "event_id",
        F.when(~F.col("ok"), F.col("value").cast("binary")).alias("raw"))
    routed_schema = _ddl(spark_sql.ROUTED)
    ran_schema = _ddl(spark_sql.RAN)
    routed = checked.mapInArrow(
        lambda it: spark_sql.route(it, rt.value.parser, now, as_of, routed_schema),
        spark_sql.ROUTED)
    from pyspark import StorageLevel
    ran = (routed.repartition(_partitions(spark), "user")
           .sortWithinPartitions("user", "line", "sub")
           .mapInArrow(lambda it: spark_sql.run_users(it, rt.value, as_of, trigger, updated_at,
                                                       ran_schema), spark_sql.RAN)
           .persist(StorageLevel.MEMORY_AND_DISK))
    others = ran.filter(F.col("kind") != spark_sql.PROFILE).collect()
    counts: Counter = Counter()
    dead = []
    for r in others:
        if r["kind"] == spark_sql.COUNTS:
            counts.update(orjson.loads(r["text"]))
        else:
            dead.append((r["line"], r["sub"], r["reason"], r["text"], r["original"]))
    _say(progress_stream, f"batch: {counts['events']:,} events read and checked on {master}")
    profiles = (ran.filter(F.col("kind") == spark_sql.PROFILE)
                .repartitionByRange(_partitions(spark), "user").sortWithinPartitions("user"))
    if fmt_out == "jsonl":
        profiles.select(F.col("text").alias("value")).write.mode("overwrite").text(out)
    else:
        schema = _profile_schema(feature_ids(rt_local))
        (profiles.select(F.from_json("text", schema).alias("p")).select("p.*")
         .write.mode("overwrite").parquet(out))
    ran.unpersist()
    dead = _with_originals(spark, lines, dead)
    records = [{"reason": d[2], "message": d[3], "line": d[0], "original": d[4]}
               for d in sorted(dead, key=lambda d: (d[0], d[1]))]
    _write_small(spark, records, dlq_path(out, fmt_out), fmt_out, _dead_letter_schema())
    report = batch_report(counts, time.perf_counter() - t0)
    _say(progress_stream, f"batch: {report.users:,} profiles written")
    return report


def _ddl(ddl: str):
    """The Arrow schema of a flat DDL string of byte, long and string columns."""
    import pyarrow as pa
    kinds = {"byte": pa.int8(), "long": pa.int64(), "string": pa.string()}
    return pa.schema([(name, kinds[kind]) for name, kind in
                      (c.split() for c in ddl.split(","))])


def _numbered_lines(spark, path: str):
    """A DataFrame (line, value) of a JSONL input: `line` counts from 1 over the files in path
    order, from each file block's place (a count per block, then each row's place in its
    block), never from the order Spark delivers rows in."""
    from pyspark.sql import functions as F
    df = spark.read.option("lineSep", "\n").text(path).select(
        "value", F.col("_metadata.file_path").alias("_f"),
        F.col("_metadata.file_block_start").alias("_b"),
        F.monotonically_increasing_id().alias("_id"))      # consecutive within a block
    blocks = df.groupBy("_f", "_b").agg(F.count(F.lit(1)).alias("count"),
                                        F.min("_id").alias("lo")).collect()
    firsts = _first_lines(blocks, ("_f", "_b"))
    offsets = spark.createDataFrame(
        [(r["_f"], r["_b"], firsts[(r["_f"], r["_b"])] - r["lo"]) for r in blocks] or
        [("", -1, 0)], "_f string, _b long, _off long")
    return df.join(F.broadcast(offsets), ["_f", "_b"]).select(
        (F.col("_id") + F.col("_off")).alias("line"), "value")


def _with_originals(spark, lines, dead: list) -> list:
    """too_late dead letters (original None) with their original looked up by line."""
    from pyspark.sql import functions as F
    wanted = {(d[0], d[1]) for d in dead if d[4] is None}
    if not wanted:
        return dead
    keys = spark.createDataFrame([(n,) for n in sorted({w[0] for w in wanted})], "line long")
    rows = lines.join(F.broadcast(keys), "line").select(
        "line", F.col("value").cast("binary").alias("raw")).collect()
    found = originals(iter_lines(sorted((r["line"], bytes(r["raw"])) for r in rows)), wanted)
    return [d if d[4] is not None else (*d[:4], found.get((d[0], d[1]), "")) for d in dead]


def _write_small(spark, records: list, path: str | Path, fmt: str, schema) -> None:
    """Records from the driver as one part file."""
    if fmt == "jsonl":
        df = spark.createDataFrame([(orjson.dumps(r).decode(),) for r in records],
                                   "value string")
        df.coalesce(1).write.mode("overwrite").text(str(path))
        return
    spark.createDataFrame(records, schema).coalesce(1).write.mode("overwrite").parquet(str(path))


@said_plainly
def run_training_set(cfg: ProfileConfig, items: str | Path | None, events: str,
                     labels: str, out: str | Path, master: str = "local[*]",
                     events_format: str | None = None, labels_format: str | None = None,
                     out_format: str | None = None, order_by: str | None = None,
                     progress_stream: IO | None = sys.stderr) -> TrainingReport:
    t0 = time.perf_counter()
    spark = session(master)
    out = str(out)
    fmt_in, fmt_labels = detect(events, events_format), detect(labels, labels_format)
    fmt_out = detect(out, out_format)
    if fmt_out == "parquet" and fmt_labels != "parquet":
        raise OfflineError("with --engine spark a Parquet training set needs Parquet labels "
                           "(their schema is the output's); write JSONL or convert the labels")
    rt_local = runtime(cfg, items)
    rt = spark.sparkContext.broadcast(rt_local)
    from pyspark import StorageLevel

    label_rows = numbered_rows(spark, str(labels), fmt_labels, keep_nulls=True)
    if fmt_labels == "jsonl":
        label_rows = label_rows.filter(lambda lr: lr[1].strip()).map(
            lambda lr: (lr[0], _label_object(lr[1], labels, lr[0])))
    where = "{}:{}" if fmt_labels == "jsonl" else "{}: row {}"

    def keyed(part: Iterator) -> Iterator:
        """("l", ((user_id, 0, as_of, line), row)) per label; per partition ("s", (labels,
        min and max user id, last line, first error))."""
        n, lo, hi, last, error = 0, None, None, 0, None
        for line, row in part:
            key = _key_or_error(row, where.format(labels, line))
            if isinstance(key, str):
                error = error or key
                continue
            uid = key[0]
            n, last = n + 1, max(last, line)
            lo = uid if lo is None or uid < lo else lo
            hi = uid if hi is None or uid > hi else hi
            yield "l", ((uid, 0, key[1], line), row)
        yield "s", (n, lo, hi, last, error)
    labelled = label_rows.mapPartitions(keyed).persist(StorageLevel.MEMORY_AND_DISK)
    stats = _tagged(labelled, "s").collect()
    errors = [s[4] for s in stats if s[4]]
    if errors:
        raise OfflineError(errors[0])
    n_labels = sum(s[0] for s in stats)
    spans = [s[1:3] for s in stats if s[1] is not None]

    rows = event_rows(spark, str(events), fmt_in, order_by)
    checked = _checked(rt, rows, time.time(), None, order_by)
    counts, event_span = _counts_and_span(checked)
    _say(progress_stream, f"training-set: {counts['events']:,} events read and checked on "
         f"{master}; {n_labels:,} labels")
    spans.append(event_span)
    span = (min(s[0] for s in spans), max(s[1] for s in spans))

    users_seen = spark.sparkContext.accumulator(0)     # a figure for the report only

    def users(part: Iterator) -> Iterator:
        """Each labelled user's labels and events (labels first, then events in log order),
        many users at a time through the core."""
        def run(labels: list, flat: list) -> Iterator:
            wanted: dict[int, set[int]] = {}
            for key, _ in labels:
                wanted.setdefault(key[0], set()).add(key[2])
            fields = training_users(rt.value, rows_from_flat(flat), wanted)
            for key, row in labels:
                yield (key[3],), {**row, **fields[(key[0], key[2])]}

        labels: list = []
        flat: list = []
        users_here = 0
        for uid, group in groupby(part, key=lambda kv: kv[0][0]):
            mine = [(k, v) for k, v in group]
            wanted_here = [(k, v) for k, v in mine if k[1] == 0]
            if not wanted_here:
                continue
            users_seen.add(1)
            labels += wanted_here
            flat += [v for k, v in mine if k[1] != 0]
            users_here += 1
            if users_here >= USERS_PER_CALL:
                yield from run(labels, flat)
                labels, flat, users_here = [], [], 0
        if labels:
            yield from run(labels, flat)

    both = _tagged(labelled, "l").union(_tagged(checked, "e"))
    joined = _sorted_by_first(
        _sorted_by_first(both, span, _partitions(spark)).mapPartitions(users),
        (1, max([1] + [s[3] for s in stats])), _partitions(spark)).map(lambda kv: kv[1])
    schema = None
    if fmt_out == "parquet":
        from pyspark.sql import types as T
        label_schema = spark.read.parquet(str(labels)).schema
        prof = _profile_schema(feature_ids(rt_local))
        schema = T.StructType(list(label_schema.fields) + [prof[n] for n in PROFILE_FIELDS])
    _write(spark, joined, out, fmt_out, schema)
    _dead_letters(spark, rows, _tagged(checked, "d"), out, fmt_out)
    checked.unpersist()
    labelled.unpersist()
    rejected = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("rejected:")}
    return TrainingReport(n_labels, users_seen.value, counts["events"], rejected,
                          time.perf_counter() - t0)


def _label_object(raw: bytes, path: str, line: int) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return _LabelError(f"{path}:{line}: not valid JSON: {e}")


class _LabelError(str):
    """A bad label row, carried to the driver to be raised there."""


def _key_or_error(row: Any, where: str) -> tuple[int, int] | str:
    if isinstance(row, _LabelError):
        return str(row)
    try:
        return label_key(row, where)
    except OfflineError as e:
        return str(e)


def _say(stream: IO | None, line: str) -> None:
    if stream is not None:
        print(line, file=stream, flush=True)
