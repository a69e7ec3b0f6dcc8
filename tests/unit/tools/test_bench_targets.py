"""`make bench`'s targets table says met or missed by each target's own direction."""
from __future__ import annotations

from tools.bench import targets


def _verdicts(**figures) -> dict[str, str]:
    base = dict(sparse_vs_quix=None, large_vs_kstreams=None, sparse_vs_ceiling=None,
                sparse_vs_naive=None, bench_vs_naive=None, p99_5k_ms=None, p99_20k_ms=None)
    rows = targets.table(targets.stream_targets(**{**base, **figures}))[2:]
    return {r.split(" | ")[0].lstrip("| "): r.rsplit("|", 2)[1].strip() for r in rows}


def test_ratios_are_met_at_or_above_and_latencies_at_or_below():
    v = _verdicts(sparse_vs_quix=3.0, bench_vs_naive=19.99, p99_5k_ms=50, p99_20k_ms=100.5)
    assert v["sparse sample, 1 worker, vs quixstreams (from process start)"] == "met"
    assert v["bench sample, 1 worker, vs naive Faust (A/B)"] == "missed"
    assert v["p99 event→publish at 5,000/s"] == "met"
    assert v["p99 event→publish at 20,000/s"] == "missed"
    assert v["large sparse sample (25,000 users), 1 worker, vs Kafka Streams"] == "-"


def test_a_ratio_needs_both_figures():
    assert targets.ratio(None, 2.0) is None
    assert targets.ratio(1.0, 0.0) is None
    assert targets.ratio(1.0, 4.0) == 0.25


def test_the_scale_targets_read_rates_and_ratios_in_their_own_directions():
    rows = targets.table(targets.scale_targets(
        batch_jsonl=1_000_000, batch_parquet=1_999_999.0, daily_full_vs_daily=1.31,
        spark_vs_local=None))[2:]
    assert rows == [
        "| batch path, 2 cores, JSONL | 1,000,000 events/s | ≥ 1,000,000 | met |",
        "| batch path, 2 cores, Parquet | 1,999,999 events/s | ≥ 2,000,000 | missed |",
        "| `job daily --full`, 1,000,000 users, against the plain daily scan | 1.31× | ≤ 1.3× "
        "| missed |",
        "| `batch --engine spark --master local[2]`, 4M events, against `--engine local` | "
        "not in this run | ≥ 0.5 | - |"]


def test_the_scaled_sample_moves_users_and_keeps_malformed_lines():
    import orjson

    from tools.bench.scale import _shifted
    line = b'{"user_id":7,"item_id":3,"timestamp":1762009468,"event_type":"click",' \
           b'"event_id":"u7-1","dwell_time":31}'
    moved, row = _shifted(line, 10_000)
    assert orjson.loads(moved)["user_id"] == 10_007
    assert row == {"user_id": 10_007, "item_id": 3, "timestamp": 1762009468, "action_type": None,
                   "event_type": "click", "event_id": "u7-1", "dwell_time": 31.0}
    for bad in (b'{"user_id": 7, "item_id": "x"', b'[1, 2]', b'{"item_id": 5}'):
        assert _shifted(bad, 10_000) == (bad, None)
    odd = b'{"user_id":7,"item_id":3,"timestamp":1,"extra":1}'     # an event, not a Parquet row
    assert _shifted(odd, 1)[1] is None and orjson.loads(_shifted(odd, 1)[0])["user_id"] == 8
