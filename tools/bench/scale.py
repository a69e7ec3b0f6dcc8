"""The fast path's offline and scheduled-run targets (issue 25) at the scale the issue sets them:
the batch path on about 4 million events (the sample generator's 5,000 users ten times over,
under distinct user ids), from JSONL and from Parquet, on the local engine with every core and
on Spark with the same cores; and `job daily --full` against the plain daily scan over 1,000,000
users (tools.bench.jobs). `make bench` runs it; `profiles bench --only scale` alone."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from features.config import parse_config
from tools.bench import targets
from tools.data.sample import SampleSpec, write_sample

SCALE_USERS = 5_000
SCALE_COPIES = 10
JOBS_USERS = 1_000_000
JOBS_DUE = 10_000
# the columns of a Parquet event file (offline.formats.row_object: a null is an absent field)
EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "action_type", "event_type", "event_id",
                 "dwell_time")
INT_COLUMNS = ("user_id", "item_id", "timestamp")


@dataclass
class ScaledSample:
    items: Path
    jsonl: Path
    parquet: Path
    users: int
    copies: int
    lines: int              # JSONL lines, the sample's malformed ones included
    rows: int               # Parquet rows: the lines that are events of the usual shape


def _shifted(line: bytes, shift: int) -> tuple[bytes, dict[str, Any] | None]:
    """The line under user id + shift (a line that is no such object unchanged), and the event
    as a Parquet row when it has the usual shape."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line, None
    if not isinstance(obj, dict) or type(obj.get("user_id")) is not int:
        return line, None
    obj["user_id"] += shift
    row = None
    if set(obj) <= set(EVENT_COLUMNS) and all(type(obj.get(k)) is int for k in INT_COLUMNS) \
            and type(obj.get("action_type", 0)) is int \
            and all(type(obj.get(k, "")) is str for k in ("event_type", "event_id")) \
            and type(obj.get("dwell_time", 0.0)) in (int, float):
        row = {k: obj.get(k) for k in EVENT_COLUMNS}
        if row["dwell_time"] is not None:
            row["dwell_time"] = float(row["dwell_time"])
    return orjson.dumps(obj), row


def scaled_sample(workdir: Path, users: int = SCALE_USERS, copies: int = SCALE_COPIES,
                  days: int = 30, say: Callable[[str], None] = print) -> ScaledSample:
    """The sample generator's `users` users, `copies` times over (scaled_copies)."""
    info = write_sample(SampleSpec(users=users, days=days), workdir / "sample")
    return scaled_copies(workdir / "sample", workdir, info["users"], copies, say)


def scaled_copies(sample: Path, out: Path, users: int, copies: int,
                  say: Callable[[str], None] = print) -> ScaledSample:
    """OUT/events.jsonl: `copies` copies of SAMPLE/events.jsonl, copy k under user ids shifted
    by k x a power of ten above `users`, its malformed lines kept; OUT/events.parquet: the
    lines that are events of the usual shape, as rows (groups of 131,072)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    out.mkdir(parents=True, exist_ok=True)
    base = (sample / "events.jsonl").read_bytes().splitlines()
    shift_step = 10 ** len(str(users))
    jsonl, parquet = out / "events.jsonl", out / "events.parquet"
    lines = rows = 0
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("timestamp", pa.int64()), ("action_type", pa.int64()),
                        ("event_type", pa.string()), ("event_id", pa.string()),
                        ("dwell_time", pa.float64())])
    with open(jsonl, "wb") as f, pq.ParquetWriter(parquet, schema) as writer:
        for k in range(copies):
            shifted = [_shifted(line, k * shift_step) for line in base]
            f.write(b"\n".join(s for s, _ in shifted) + b"\n")
            batch = [r for _, r in shifted if r is not None]
            writer.write_table(pa.Table.from_pylist(batch, schema=schema), row_group_size=131072)
            lines += len(shifted)
            rows += len(batch)
    say(f"scaled sample: {users:,} users x {copies} = {lines:,} lines ({rows:,} Parquet rows)")
    return ScaledSample(sample / "item_feat_dict.json", jsonl, parquet, users, copies, lines,
                        rows)


@dataclass
class ScaleRows:
    sample: ScaledSample
    cores: int
    local_jsonl: float          # events/s
    local_parquet: float
    spark_jsonl: float | None
    spark_master: str
    jobs: Any                   # tools.bench.jobs.JobsBench
    load: float

    def daily_full_vs_daily(self) -> float | None:
        full, plain = self.jobs.seconds("daily --full"), self.jobs.seconds("daily")
        return full / plain if full and plain else None

    def target_list(self) -> list[targets.Target]:
        return targets.scale_targets(
            batch_jsonl=self.local_jsonl, batch_parquet=self.local_parquet,
            daily_full_vs_daily=self.daily_full_vs_daily(),
            spark_vs_local=targets.ratio(self.spark_jsonl, self.local_jsonl))

    def lines(self) -> list[str]:
        full, plain = self.jobs.seconds("daily --full"), self.jobs.seconds("daily")
        spark = f"{self.spark_jsonl:,.0f}" if self.spark_jsonl else "-"
        return [
            f"At the issue's scale: `profiles batch` on {self.sample.lines:,} JSONL lines "
            f"({self.sample.rows:,} Parquet rows): the sample generator's "
            f"{self.sample.users:,} users {self.sample.copies} times over under distinct ids, "
            f"best of 2 runs from files to files (Spark: 1 run in a "
            f"session started before it); load average up to {self.load:.1f}. Scheduled runs: "
            f"{self.jobs.users:,} users, one worker (tools/bench/jobs.py).",
            "",
            "| what | events/s |",
            "|---|---:|",
            f"| batch `--engine local --workers {self.cores}`, JSONL | {self.local_jsonl:,.0f} |",
            f"| batch `--engine local --workers {self.cores}`, Parquet | "
            f"{self.local_parquet:,.0f} |",
            f"| batch `--engine spark --master {self.spark_master}`, JSONL | {spark} |",
            "",
            f"`job daily --full` {full or 0:.2f} s against the plain daily scan {plain or 0:.2f} s "
            f"(the worker's own report).",
        ]


def run_scale_rows(workdir: Path, say: Callable[[str], None] = print,
                   spark_master: str = "local[2]", users: int = SCALE_USERS,
                   copies: int = SCALE_COPIES, jobs_users: int = JOBS_USERS) -> ScaleRows:
    from offline import local
    from offline import spark as spark_engine
    from tools.bench.jobs import time_jobs
    sample = scaled_sample(workdir / "scaled", users, copies, say=say)
    cfg = parse_config({"mapping_index": str(workdir / "mapping_index.json")}, env={})
    cores = os.cpu_count() or 1
    local.keep_freed_memory()
    out = workdir / "out"
    load = os.getloadavg()[0]

    def best(name: str, fn: Callable[[], Any], repeat: int) -> float:
        rate = 0.0
        for _ in range(repeat):
            t0 = time.perf_counter()
            report = fn()
            rate = max(rate, report.events / (time.perf_counter() - t0))
        say(f"  {name}: {rate:,.0f} events/s")
        return rate
    local_jsonl = best("local, JSONL", lambda: local.run_batch(
        cfg, sample.items, sample.jsonl, out / "local.jsonl", workers=cores,
        progress_stream=None), 2)
    local_parquet = best("local, Parquet", lambda: local.run_batch(
        cfg, sample.items, sample.parquet, out / "local-pq.jsonl", workers=cores,
        progress_stream=None), 2)
    session = spark_engine.session(spark_master)
    try:
        spark_jsonl = best(f"spark {spark_master}, JSONL",
                           lambda: spark_engine.run_batch(
                               cfg, sample.items, str(sample.jsonl), out / "spark.jsonl",
                               master=spark_master, progress_stream=None), 1)
    finally:
        session.stop()
    load = max(load, os.getloadavg()[0])
    say(f"scheduled runs over {jobs_users:,} users")
    jobs = time_jobs(workdir / "jobs", jobs_users, JOBS_DUE, True, say)
    return ScaleRows(sample, cores, local_jsonl, local_parquet, spark_jsonl, spark_master, jobs,
                     max(load, os.getloadavg()[0]))
