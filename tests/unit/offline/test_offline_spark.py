"""`--engine spark` (PySpark on local[2], one session for every Spark test) against the local engine
and the brute-force definition of a training row."""
from __future__ import annotations

import pytest

from features.config import parse_config
from offline import OfflineError, local
from offline import spark as spark_engine
from offline.formats import dlq_path, read_records
from tests.offline_data import (
    brute_force,
    dead_letter_keys,
    events_to_parquet,
    random_labels,
    sample_events,
    without_updated_at,
    write_jsonl,
)

MASTER = "local[2]"


@pytest.fixture(scope="module")
def spark(spark_session):
    session = spark_session
    # small file splits: the inputs are read as several blocks over several partitions, so
    # line numbers must come from the files, not from the order rows arrive in
    session.conf.set("spark.sql.files.maxPartitionBytes", "200000")
    session.conf.set("spark.sql.files.openCostInBytes", "0")
    return session


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("offline-spark")
    items, events = sample_events(d / "sample", users=80)
    cfg = parse_config({"mapping_index": str(d / "index.json")}, env={})
    local.run_batch(cfg, items, events, d / "local" / "profiles.jsonl", workers=1,
                    progress_stream=None)
    return cfg, items, events, d


def test_spark_batch_equals_local_record_for_record(spark, data):
    cfg, items, events, d = data
    out = d / "spark" / "profiles.jsonl"
    report = spark_engine.run_batch(cfg, items, str(events), out, master=MASTER,
                                    progress_stream=None)
    want = without_updated_at(read_records(d / "local" / "profiles.jsonl"))
    assert out.is_dir() and without_updated_at(read_records(out)) == want
    assert report.users == len(want) and report.duplicates > 0
    assert report.rejected["too_late"] >= 2 and len(report.rejected) == 8
    dead = dead_letter_keys(dlq_path(out, "jsonl"))
    assert dead == dead_letter_keys(d / "local" / "profiles.dlq.jsonl")
    assert sum(report.rejected.values()) == len(dead)


def test_spark_training_set_equals_brute_force(spark, data):
    cfg, items, events, d = data
    labels = random_labels(events, 40, seed=11)
    out = d / "spark-train.jsonl"
    report = spark_engine.run_training_set(cfg, items, str(events),
                                           str(write_jsonl(d / "labels.jsonl", labels)), out,
                                           master=MASTER, progress_stream=None)
    assert report.labels == len(labels)
    assert read_records(out) == brute_force(cfg, items, events, labels, d / "brute")


def test_spark_parquet_with_order_column_equals_local(spark, data):
    """Shuffled Parquet rows, log order from the `offset` column; Parquet out."""
    cfg, items, events, d = data
    pq_events = events_to_parquet(events, d / "events.parquet", shuffle_seed=3,
                                  row_group_size=500)
    local.run_batch(cfg, items, pq_events, d / "pq-local.parquet", workers=1,
                    order_by="offset", progress_stream=None)
    spark_engine.run_batch(cfg, items, str(pq_events), d / "pq-spark.parquet", master=MASTER,
                           order_by="offset", progress_stream=None)
    assert without_updated_at(read_records(d / "pq-spark.parquet")) == \
        without_updated_at(read_records(d / "pq-local.parquet"))
    assert dead_letter_keys(d / "pq-spark.dlq.parquet") == \
        dead_letter_keys(d / "pq-local.dlq.parquet")
    with pytest.raises(OfflineError, match="must be an integer on every event"):
        spark_engine.run_batch(cfg, items, str(pq_events), d / "x.jsonl", master=MASTER,
                               order_by="dwell_time", progress_stream=None)
