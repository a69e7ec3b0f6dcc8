"""The local engine (worker processes), training sets and Parquet, against the reference batch
path (reference.batch) and the brute-force definition of a point-in-time profile."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from features.columnar.layout import ColumnarState
from features.config import parse_config
from features.events import Event
from offline import OfflineError, core, local
from offline.batch_io import dlq_path as reference_dlq_path
from offline.formats import dlq_path, read_records, require_pyarrow
from reference.batch import run_batch as reference_batch
from tests.offline_data import (
    DEFAULT_PROFILE,
    brute_force,
    dead_letter_keys,
    events_to_parquet,
    random_labels,
    sample_events,
    without_updated_at,
    write_jsonl,
)

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("offline")
    items, events = sample_events(d / "sample")
    cfg = parse_config({"mapping_index": str(d / "index.json")}, env={})
    return cfg, items, events, d


@pytest.fixture(scope="module")
def reference(data):
    cfg, items, events, d = data
    report = reference_batch(cfg, items, events, d / "ref" / "profiles.jsonl",
                             progress_stream=None)
    return report, d / "ref" / "profiles.jsonl"


def test_local_engine_equals_reference_with_any_number_of_workers(data, reference):
    cfg, items, events, d = data
    ref_report, ref_out = reference
    assert ref_report.rejected["too_late"] >= 2 and ref_report.duplicates > 0
    assert set(ref_report.rejected) >= {"malformed_json", "not_an_object", "missing_field",
                                         "bad_type", "out_of_range", "unknown_action",
                                         "future_timestamp", "too_late"}
    want = without_updated_at(read_records(ref_out))
    want_dead = dead_letter_keys(reference_dlq_path(ref_out))
    for workers in (1, 2):
        out = d / f"w{workers}" / "profiles.jsonl"
        report = local.run_batch(cfg, items, events, out, workers=workers, progress_stream=None)
        assert report.summary() | {"seconds": 0, "events_per_second": 0} == \
            ref_report.summary() | {"seconds": 0, "events_per_second": 0}
        assert without_updated_at(read_records(out)) == want, workers
        assert dead_letter_keys(dlq_path(out, "jsonl")) == want_dead, workers


def test_local_engine_as_of_equals_reference(data):
    cfg, items, events, d = data
    as_of = 1_764_547_200 - 9 * 86400 + 1234
    reference_batch(cfg, items, events, d / "ref-asof.jsonl", as_of=as_of, progress_stream=None)
    report = local.run_batch(cfg, items, events, d / "asof.jsonl", as_of=as_of, workers=2,
                             progress_stream=None)
    assert report.after_as_of > 0
    assert without_updated_at(read_records(d / "asof.jsonl")) == \
        without_updated_at(read_records(d / "ref-asof.jsonl"))
    assert dead_letter_keys(d / "asof.dlq.jsonl") == dead_letter_keys(d / "ref-asof.dlq.jsonl")


@pytest.mark.parametrize("workers", [1, 2])
def test_training_set_equals_brute_force(data, workers):
    cfg, items, events, d = data
    labels = random_labels(events, 60, seed=workers)
    path = write_jsonl(d / f"labels{workers}.jsonl", labels)
    out = d / f"train{workers}.jsonl"
    report = local.run_training_set(cfg, items, events, path, out, workers=workers,
                                    progress_stream=None)
    got = read_records(out)
    want = brute_force(cfg, items, events, labels, d / f"brute{workers}")
    assert report.labels == len(labels) == len(got)
    assert got == want                          # row for row, label columns passed through
    assert any(r["features"] == DEFAULT_PROFILE["features"] for r in got)
    assert any(r["features"] != DEFAULT_PROFILE["features"] for r in got)
    assert list(got[0])[:4] == ["user_id", "ts", "clicked", "row"]
    if workers == 1:                        # the same rows as Parquet (JSONL labels' schema)
        require_pyarrow()
        local.run_training_set(cfg, items, events, path, d / "train.pq", workers=1,
                               out_format="parquet", progress_stream=None)
        assert read_records(d / "train.pq", "parquet") == got


def _count_applies(monkeypatch) -> list[int]:
    calls = [0]
    real = core.apply

    def counting(*a):
        calls[0] += 1
        return real(*a)
    monkeypatch.setattr(core, "apply", counting)
    return calls


def test_profiles_at_is_one_pass_for_events_in_time_order(data, monkeypatch):
    cfg, items, *_ = data
    rt = local.runtime(cfg, items)
    t0 = 1_764_000_000
    events = [Event(1, 10 + i % 7, t0 + 600 * i, i % 3, None, f"e{i % 40}") for i in range(60)]
    times = [t0 - 5, t0, t0 + 600 * 10, t0 + 600 * 10, t0 + 600 * 33, t0 + 10 ** 6]
    calls = _count_applies(monkeypatch)
    got = core.profiles_at(rt, 1, events, times)
    assert calls[0] == len(events)                       # each event applied once
    for T in set(times):
        st = core.replay(rt, [e for e in events if e.ts <= T]).state
        assert got[T] == core.evaluate(rt, 1, st, T)


def test_profiles_at_out_of_order_rebuilds_at_most_once_per_time(data, monkeypatch):
    cfg, items, *_ = data
    rt = local.runtime(cfg, items)
    t0 = 1_764_000_000
    # a late event (day 0) logged after events of day 31: too late for T = day 31, but
    # applied when the label time is before day 31 (then the later events are not in view)
    events = [Event(1, 10, t0, 1, None, "a"), Event(1, 11, t0 + 31 * 86400, 1, None, "b"),
              Event(1, 12, t0 + 10, 1, None, "c"), Event(1, 11, t0 + 5, 2, None, "b")]
    times = [t0 + 20, t0 + 31 * 86400, t0 + 2 * 86400]
    calls = _count_applies(monkeypatch)
    got = core.profiles_at(rt, 1, events, times)
    # rebuilt once, for the last time (its entering event stands before applied ones)
    assert len(events) < calls[0] <= len(events) * len(set(times))
    for T in times:
        st = core.replay(rt, [e for e in events if e.ts <= T]).state
        assert got[T] == core.evaluate(rt, 1, st, T), T
    assert len(core.replay(rt, [e for e in events if e.ts <= t0 + 31 * 86400]).too_late) == 2
    assert not core.replay(rt, [e for e in events if e.ts <= t0 + 20]).too_late


def test_default_profile_is_the_empty_state_as_of_ts(data):
    cfg, items, *_ = data
    rt = local.runtime(cfg, items)
    p = core.evaluate(rt, 5, ColumnarState.new(), 1_700_000_000)
    assert {k: getattr(p, k) for k in DEFAULT_PROFILE} == DEFAULT_PROFILE


def test_parquet_events_with_an_order_column_equal_jsonl(data, reference):
    """Rows shuffled in the file; the `offset` column carries the log order. Parquet out."""
    require_pyarrow()
    cfg, items, events, d = data
    pq_events = events_to_parquet(events, d / "events.parquet", shuffle_seed=5)
    jsonl_out = d / "pq-ref.jsonl"
    reference_batch(cfg, items, _parquet_rows_as_jsonl(pq_events, d / "rows.jsonl"), jsonl_out,
                    progress_stream=None)
    out = d / "pq" / "profiles.parquet"
    local.run_batch(cfg, items, pq_events, out, workers=2, order_by="offset",
                    progress_stream=None)
    assert without_updated_at(read_records(out)) == without_updated_at(read_records(jsonl_out))
    dead = read_records(dlq_path(out, "parquet"))
    assert {d_["reason"] for d_ in dead} >= {"out_of_range", "unknown_action", "too_late",
                                              "future_timestamp", "missing_field"}
    missing = [d_ for d_ in dead if d_["reason"] == "missing_field"]
    # a Parquet row's original: the JSON object of its non-null columns
    assert all("null" not in d_["original"] and '"offset":' in d_["original"] for d_ in missing)


def test_a_folder_of_parquet_parts_reads_as_one_log(data):
    """Part files in path order, rows numbered across them (dead letters name those rows)."""
    pq = require_pyarrow()
    cfg, items, events, d = data
    whole = events_to_parquet(events, d / "whole.parquet")
    table = pq.read_table(whole)
    (d / "parts").mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), d / "parts" / "part-0.parquet")
    pq.write_table(table.slice(half), d / "parts" / "part-1.parquet")
    for src, name, workers in ((whole, "whole", 1), (d / "parts", "parts", 2)):
        local.run_batch(cfg, items, src, d / f"{name}.jsonl", workers=workers,
                        progress_stream=None)
    assert without_updated_at(read_records(d / "parts.jsonl")) == \
        without_updated_at(read_records(d / "whole.jsonl"))
    assert dead_letter_keys(d / "parts.dlq.jsonl") == dead_letter_keys(d / "whole.dlq.jsonl")
    assert max(x["line"] for x in read_records(d / "parts.dlq.jsonl")) > half


def test_null_action_columns_are_absent_fields(data):
    """A Parquet table with both action columns gives rows where both are null; such a row,
    like the JSON line {"action_type": null}, lacks an action (it once became an event with
    no action, which the state encoding then refused)."""
    cfg, items, _, d = data
    rt = local.runtime(cfg, items)
    base = {"user_id": 1, "item_id": 2, "timestamp": 1_700_000_000}
    for obj in ({**base, "action_type": None}, {**base, "action_type": None,
                                                "event_type": None}):
        assert rt.parser.parse_line(orjson.dumps(obj)).reason == "missing_field"
    assert rt.parser.check_line({**base, "action_type": None, "event_type": "click"}).action == 1


def _parquet_rows_as_jsonl(pq_events: Path, out: Path) -> Path:
    """The Parquet rows in log (offset) order as JSON lines of their non-null columns: what
    the reference path must make of them."""
    pq = require_pyarrow()
    rows = sorted(pq.read_table(pq_events).to_pylist(), key=lambda r: r["offset"])
    return write_jsonl(out, [{k: v for k, v in r.items() if v is not None} for r in rows])


def test_parquet_labels_pass_through_and_parquet_out(data):
    pq = require_pyarrow()
    import pyarrow as pa
    cfg, items, events, d = data
    labels = random_labels(events, 20, seed=9)
    table = pa.table({"user_id": [r["user_id"] for r in labels],
                      "ts": [float(r["ts"]) + 0.5 for r in labels],     # fractions floored
                      "clicked": [r["clicked"] for r in labels],
                      "weight": pa.array([1.5] * len(labels), pa.float32())})
    pq.write_table(table, d / "labels.parquet")
    out = d / "train.parquet"
    local.run_training_set(cfg, items, events, d / "labels.parquet", out, workers=1,
                           progress_stream=None)
    got = pq.read_table(out)
    assert got.schema.field("weight").type == pa.float32()
    assert got.column_names[:4] == ["user_id", "ts", "clicked", "weight"]
    want = brute_force(cfg, items, events, labels, d / "brute-pq")
    rows = read_records(out)
    for r, w in zip(rows, want):
        assert r["as_of"] == w["ts"] and r["ts"] == w["ts"] + 0.5
        assert {k: r[k] for k in DEFAULT_PROFILE} == {k: w[k] for k in DEFAULT_PROFILE}


def test_parquet_items_in_both_layouts_equal_the_json_catalog(data):
    pq = require_pyarrow()
    import pyarrow as pa
    cfg, items, _, d = data
    catalog = orjson.loads(items.read_bytes())
    ids = sorted(int(i) for i in catalog)
    fids = sorted({f for feats in catalog.values() for f in feats}, key=int)
    pq.write_table(pa.table({"item_id": ids, "features": pa.array(
        [list(catalog[str(i)].items()) for i in ids], pa.map_(pa.string(), pa.int64()))}),
        d / "items-map.parquet")
    pq.write_table(pa.table({"item_id": ids, **{f: [catalog[str(i)].get(f) for i in ids]
                                                for f in fids}}), d / "items-wide.parquet")
    want = local.runtime(cfg, items).catalog
    for name in ("items-map.parquet", "items-wide.parquet"):
        got = local.runtime(cfg, d / name).catalog
        assert got.features == want.features, name
        assert [got.categories(i) for i in ids] == [want.categories(i) for i in ids]
    assert any(want.categories(i) for i in ids)


def test_bad_labels_stop_the_run_with_one_sentence(data):
    cfg, items, events, d = data
    for bad, says in (({"user_id": "7", "ts": 1}, "user_id '7' is not an integer id"),
                      ({"user_id": 7}, "ts None is not a time"),
                      ({"user_id": 7, "ts": 1, "confidence": 1}, "would be overwritten")):
        path = write_jsonl(d / "bad-labels.jsonl", [{"user_id": 1, "ts": 5}, bad])
        with pytest.raises(OfflineError, match=says) as e:
            local.run_training_set(cfg, items, events, path, d / "x.jsonl", workers=1,
                                   progress_stream=None)
        assert str(e.value).startswith(f"{path}:2: ")


def test_missing_extra_or_java_is_one_sentence(monkeypatch):
    from offline import spark
    monkeypatch.setitem(sys.modules, "pyspark", None)
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(OfflineError, match=r"needs PySpark, which is not installed: pip "):
        spark.session("local[1]")
    monkeypatch.delitem(sys.modules, "pyspark")
    monkeypatch.delitem(sys.modules, "pyspark.sql")
    monkeypatch.setattr(spark.shutil, "which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(OfflineError, match=r"needs a Java runtime \(JDK 17 or newer\)"):
        spark.session("local[1]")


def test_cli_training_set(data, tmp_path):
    cfg, items, events, d = data
    def run(*a):
        return subprocess.run([sys.executable, "-m", "deploy", *a], capture_output=True,
                              text=True, cwd=ROOT, timeout=300)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(f"mapping_index: {d / 'index.json'}\n")
    labels = write_jsonl(tmp_path / "labels.jsonl", random_labels(events, 5, seed=1))
    t = run("--config", str(cfg_file), "training-set", "--items", str(items), "--events",
            str(events), "--labels", str(labels), "--out", str(tmp_path / "t.jsonl"),
            "--workers", "1")
    assert t.returncode == 0, t.stderr
    assert orjson.loads(t.stdout)["labels"] == 8 and "training-set:" in t.stderr
    assert len(read_records(tmp_path / "t.jsonl")) == 8
    bad = run("--config", str(cfg_file), "training-set", "--events", str(events), "--labels",
              str(events), "--out", str(tmp_path / "x.jsonl"))
    assert bad.returncode == 1 and bad.stderr.startswith("Error: ") and \
        bad.stderr.count("\n") == 1, bad.stderr
