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
