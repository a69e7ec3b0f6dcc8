"""Issue 25's fast paths held equal to the references they replace, value for value:

- `offline.scan.hashes` (blake2b by copied hash objects, ids' bytes from Arrow) equals
  `hashes_reference` and `features.state.event_id_hash` on any text, surrogates included;
- Parquet rows validated on columns (`scan_parquet`, `scan_parquet_batch`) equal the exact
  path (`exact_rows` over `read_chunk`'s rows: `EventParser.check_line` per row) on tables
  with nulls, values out of range, unknown actions, NaN and infinite dwell times, huge and
  negative numbers, non-ASCII and over-long ids, columns of other types, an order column
  with nulls, and columns missing altogether."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.config import parse_config
from features.events import EventParser
from features.state import event_id_hash
from offline import OfflineError
from offline.formats import Chunk, plan_chunks, read_chunk
from offline.scan import Rows, exact_rows, hashes, hashes_reference, scan_parquet

NOW = 1_764_600_000.0


def same_rows(a: Rows, b: Rows) -> None:
    assert len(a) == len(b)
    for c in a.cols:
        assert a.cols[c].tolist() == b.cols[c].tolist(), c
    assert a.event_id.tolist() == b.event_id.tolist()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=200)), max_size=40))
def test_hashes_equal_the_reference(ids):
    got = hashes(ids)
    assert got.tolist() == hashes_reference(ids).tolist()
    assert got.tolist() == [-1 if i is None else event_id_hash(i) for i in ids]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"]),
                                             max_size=200)), max_size=40))
def test_hashes_from_arrow_bytes_equal_the_reference(ids):
    utf8 = pa.array(ids, pa.string()).cast(pa.binary()).to_pylist()
    assert hashes(ids, utf8).tolist() == hashes_reference(ids).tolist()


def test_hashes_across_blocks():
    ids = [f"u{i}" if i % 7 else None for i in range(5000)]
    assert hashes(ids).tolist() == hashes_reference(ids).tolist()


# ---------------------------------------------------------------- Parquet on columns

INTS = st.one_of(st.none(), st.integers(-5, 20), st.integers(-2 ** 63, 2 ** 63 - 1))
TS = st.one_of(st.none(), st.integers(1_763_000_000, 1_764_700_000),
               st.integers(1_763_000_000_000, 1_764_700_000_000), st.integers(-10, 2 ** 62),
               st.sampled_from([99_999_999_999, 100_000_000_000, 2 ** 40, 2 ** 40 * 1000]))
DWELL = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                  st.floats(0, 86400), st.sampled_from([0.0, -0.0, 86400.0, 86400.001,
                                                        0.0005, 0.0015, 2.5e-4]))
TEXT = st.one_of(st.none(), st.sampled_from(["view", "click", "purchase", "nope", "", "Click"]),
                 st.text(max_size=3))
IDS = st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"]), max_size=140),
                st.sampled_from(["e" * 128, "é" * 128, "e" * 129, "u1-1", "u1-1", ""]))
ROW = st.fixed_dictionaries({
    "user_id": st.one_of(INTS, st.integers(0, 5)), "item_id": INTS, "timestamp": TS,
    "action_type": st.one_of(st.none(), st.integers(-1, 4), st.integers(-2 ** 63, 2 ** 63 - 1)),
    "event_type": TEXT, "dwell_time": DWELL, "event_id": IDS,
    "offset": st.one_of(st.none(), st.integers(0, 10 ** 12))})


def parser_for(tmp_path, unit: str = "auto") -> EventParser:
    cfg = parse_config({"mapping_index": str(tmp_path / "index.json"),
                        "events": {"timestamp_unit": unit}}, env={})
    return EventParser(cfg.events)


def both(parser, path, as_of, order_by, n_chunks=3):
    """(fast rows, dead, counts or the error) and the same by the exact path, over chunks."""
    out = []
    for fast in (True, False):
        counts: Counter = Counter()
        rows, dead = [], []
        try:
            for chunk in plan_chunks(path, "parquet", n_chunks):
                if fast:
                    r, d = scan_parquet(parser, chunk, NOW, as_of, order_by, counts)
                else:
                    r, d = exact_rows(parser, read_chunk(chunk), NOW, as_of, order_by, counts)
                rows.append(r)
                dead += d
        except OfflineError as e:
            out.append(("error", str(e)))
            continue
        out.append((Rows.concat(rows), dead, counts))
    return out


def check_equal(parser, path, as_of=None, order_by=None, n_chunks=3):
    fast, ref = both(parser, path, as_of, order_by, n_chunks)
    if ref[0] == "error" or fast[0] == "error":
        assert fast == ref
        return
    same_rows(fast[0], ref[0])
    assert fast[1] == ref[1]
    assert fast[2] == ref[2]


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=60), unit=st.sampled_from(["auto", "s", "ms"]),
       as_of=st.sampled_from([None, 1_764_000_000]),
       order_by=st.sampled_from([None, "offset"]),
       dwell_type=st.sampled_from([pa.float64(), pa.float32()]),
       drop=st.sampled_from([None, "event_type", "action_type", "dwell_time", "event_id",
                             "user_id"]))
def test_parquet_columns_equal_the_exact_path(tmp_path, rows, unit, as_of, order_by,
                                              dwell_type, drop):
    if dwell_type == pa.float32():
        for r in rows:
            d = r["dwell_time"]
            if d is not None and math.isfinite(d) and abs(d) > 3e38:
                r["dwell_time"] = None           # not a float32
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("timestamp", pa.int64()), ("action_type", pa.int64()),
                        ("event_type", pa.string()), ("dwell_time", dwell_type),
                        ("event_id", pa.string()), ("offset", pa.int64())])
    table = pa.Table.from_pylist(rows, schema=schema)
    if drop:
        table = table.drop_columns([drop])
    path = tmp_path / "events.parquet"
    pq.write_table(table, path, row_group_size=7)
    check_equal(parser_for(tmp_path, unit), path, as_of, order_by)


def _write(tmp_path, cols: dict, name="e.parquet", groups=3):
    path = tmp_path / name
    pq.write_table(pa.table(cols), path, row_group_size=groups)
    return path


def base_cols(n=8):
    return {"user_id": pa.array(list(range(1, n + 1)), pa.int64()),
            "item_id": pa.array([5] * n, pa.int64()),
            "timestamp": pa.array([1_764_000_000 + i for i in range(n)], pa.int64()),
            "action_type": pa.array([0, 1, 2, 1, 0, 1, 2, 0][:n], pa.int64()),
            "event_id": pa.array([f"u{i}" for i in range(n)], pa.string())}


@pytest.mark.parametrize("column,values", [
    ("user_id", pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])),
    ("user_id", pa.array([True, False] * 4)),
    ("user_id", pa.array([2 ** 64 - 1, 1, 2, 3, 4, 5, 6, 7], pa.uint64())),
    ("user_id", pa.array(["1", "2", "3", "4", "5", "6", "7", "8"])),
    ("item_id", pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int8())),
    ("item_id", pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.uint32())),
    ("timestamp", pa.array([1_764_000_000.5] * 8)),
    ("timestamp", pa.array([1_764_000_000_000_000] * 8, pa.timestamp("us"))),
    ("action_type", pa.array([0, 1, None, 2, 1, 0, 5, 1], pa.int16())),
    ("event_id", pa.array([b"a", b"b", None, b"c", b"d", b"e", b"f", b"g"], pa.binary())),
    ("event_id", pa.array(["a", "b", None, "c", "d", "é", "f", "g"], pa.large_string())),
    ("event_id", pa.array([1, 2, 3, 4, 5, 6, 7, 8])),
    ("dwell_time", pa.array([0, 86400, 86401, None, 5, 7, 2 ** 40, 1], pa.int64())),
    ("dwell_time", pa.array(["1"] * 8)),
    ("event_type", pa.array(["view", "click", None, "x", "purchase", "view", "view", "v"])),
    ("extra", pa.array([{"a": 1}] * 8)),
])
def test_columns_of_other_types(tmp_path, column, values):
    cols = base_cols() | {column: values}
    check_equal(parser_for(tmp_path), _write(tmp_path, cols))


def test_an_order_column_of_another_type_or_with_nulls(tmp_path):
    parser = parser_for(tmp_path)
    for values in (pa.array([1, 2, 3, None, 5, 6, 7, 8]), pa.array([1.0] * 8),
                   pa.array([3, 1, 2, 9, 9, 1, 0, 4], pa.int32())):
        path = _write(tmp_path, base_cols() | {"offset": values})
        check_equal(parser, path, order_by="offset")
    check_equal(parser, _write(tmp_path, base_cols()), order_by="offset")   # no such column


def test_a_folder_of_files_and_the_sample_sizes(tmp_path):
    rng = np.random.default_rng(3)
    n = 70_000                               # more than one batch of 65,536 rows
    cols = {"user_id": pa.array(rng.integers(-2, 500, n)),
            "item_id": pa.array(rng.integers(0, 50, n)),
            "timestamp": pa.array(rng.integers(1_763_900_000, 1_764_700_000, n)),
            "action_type": pa.array(rng.integers(0, 4, n)),
            "dwell_time": pa.array(np.where(rng.random(n) < 0.3, np.nan, rng.random(n) * 100)),
            "event_id": pa.array([f"u{i % 60_000}" for i in range(n)])}
    d = tmp_path / "parts"
    d.mkdir()
    pq.write_table(pa.table(cols).slice(0, 40_000), d / "a.parquet", row_group_size=9_000)
    pq.write_table(pa.table(cols).slice(40_000), d / "b.parquet", row_group_size=70_000)
    for as_of in (None, 1_764_300_000):
        check_equal(parser_for(tmp_path), d, as_of=as_of, n_chunks=4)


def test_a_chunk_without_rows(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table(base_cols()).slice(0, 0), path)
    check_equal(parser_for(tmp_path), path)
    chunk = Chunk(str(path), "parquet", 1, row_groups=())
    rows, dead = scan_parquet(parser_for(tmp_path), chunk, NOW, None, None, Counter())
    assert len(rows) == 0 and dead == []


# ---------------------------------------------------------------- ids gathered lazily

def test_gathered_ids_equal_the_gathered_array():
    from offline.scan import Gathered, object_array
    base = object_array([f"e{i}" if i % 3 else None for i in range(50)])
    idx = np.random.default_rng(1).permutation(50)
    g = Gathered(base, idx)
    want = base[idx]
    assert len(g) == 50 and g.tolist() == want.tolist()
    assert [g[i] for i in range(50)] == want.tolist()
    assert g[5:20].tolist() == want[5:20].tolist() and g[5:20][3] == want[8]
    assert g[idx % 2 == 0].tolist() == want[idx % 2 == 0].tolist()
    rows = Rows({c: np.arange(50) for c in ("user", "order", "line", "sub", "ts", "item",
                                          "action", "dwell_ms", "eid_hash")}, base)
    taken = rows.take(idx, lazy_ids=True)
    assert taken.event_id.tolist() == rows.take(idx).event_id.tolist()
    both = Rows.concat([taken, rows.take(idx)])
    assert both.event_id.tolist() == want.tolist() * 2
    assert taken.take(np.arange(10)).event_id.tolist() == want[:10].tolist()


@pytest.mark.parametrize("workers", [1, 2])
def test_reused_ids_through_the_local_engine_equal_the_reference(tmp_path, workers):
    """Users whose ids repeat with another timestamp take the sequential path, which reads
    their event ids after the sort by user (lazily gathered)."""
    from offline import local
    from offline.formats import read_records
    from reference.batch import run_batch as reference_batch
    rng = np.random.default_rng(5)
    rows = []
    for i in range(3000):
        u = int(rng.integers(1, 40))
        eid = f"u{u}-{int(rng.integers(0, 30))}" if u % 3 == 0 else f"u{u}-{i}"
        rows.append({"user_id": u, "item_id": int(rng.integers(1, 9)),
                     "timestamp": 1_764_000_000 + int(rng.integers(-40, 2) * 86400)
                     + int(rng.integers(0, 86400)), "action_type": int(rng.integers(0, 3)),
                     "event_id": eid})
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    cfg = parse_config({"mapping_index": str(tmp_path / "index.json")}, env={})
    ref = reference_batch(cfg, None, events, tmp_path / "ref.jsonl", progress_stream=None)
    got = local.run_batch(cfg, None, events, tmp_path / "got.jsonl", workers=workers,
                          progress_stream=None)
    assert ref.duplicates > 0 and ref.rejected["too_late"] > 0
    strip = [{k: v for k, v in r.items() if k != "updated_at"} for r in
             read_records(tmp_path / "got.jsonl")]
    assert strip == [{k: v for k, v in r.items() if k != "updated_at"} for r in
                     read_records(tmp_path / "ref.jsonl")]
    assert got.summary() | {"seconds": 0, "events_per_second": 0} == \
        ref.summary() | {"seconds": 0, "events_per_second": 0}
    assert read_records(tmp_path / "got.dlq.jsonl") == read_records(tmp_path / "ref.dlq.jsonl")


# ---------------------------------------------------------------- JSONL blocks checked together

@pytest.mark.parametrize("seed", range(3))
def test_jsonl_blocks_checked_together_equal_the_parser(tmp_path, monkeypatch, seed):
    """Small Arrow blocks, checked CHECK_BLOCKS at a time (tables of many chunks, an
    event_type dictionary per chunk), against the exact path."""
    import random

    import offline.scan as scan
    from tests.unit.offline.test_offline_scan import exact, lines_for
    monkeypatch.setattr(scan, "BLOCK_LINES", [16, 64, 300][seed])
    parser = parser_for(tmp_path, ["auto", "s", "ms"][seed])
    rng = random.Random(seed)
    data = b"\n".join(lines_for(rng, 3000)) + b"\n"
    as_of = None if seed % 2 else 1_764_001_500
    c1, c2 = Counter(), Counter()
    rows, dead = scan.scan_jsonl(parser, data, 7, NOW, as_of, c1)
    want_rows, want_dead = exact(parser, data, 7, as_of, c2)
    same_rows(rows, want_rows)
    assert dead == want_dead and c1 == c2 and len(rows) > 1000
