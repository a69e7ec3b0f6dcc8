"""Trends of the quality scan and the cluster dashboard's merge (no broker): the bounded history,
the exact merge of workers' histories (sums of counts, never averages), the zero-filled business
distributions of /metrics and the dashboard, and the demo's profile table."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from features.config import parse_config
from features.quality import BusinessKeys, QualitySummary
from features.trends import (
    TrendHistory,
    TrendPoint,
    merge_histories,
    merge_latest,
    points_from_dict,
)
from streams.monitoring.monitor import business_families, quality_families
from streams.web.dashboard_data import merge_figures
from tools.demo import profile_table


def summary(users: int, covered: int, confidence: float, levels: dict, types: dict,
            tags: dict, prefs: dict, events: int = 0, freshness: float = 0.0,
            non_default: int = 0) -> QualitySummary:
    s = QualitySummary(users, covered, confidence, events, freshness, non_default)
    s.levels, s.types = Counter(levels), Counter(types)
    s.tags, s.preferences = Counter(tags), Counter(prefs)
    return s


def test_history_keeps_a_point_per_step_over_the_span_and_no_more():
    h = TrendHistory(span_seconds=100, max_points=10, scan_interval=5)
    assert h.step == 10                   # 100 s in 10 points: wider than a scan
    for t in range(0, 300, 5):            # two scans per step: the later one is kept
        h.add(1000.0 + t, summary(t, 0, 0.0, {}, {}, {}, {}))
    assert len(h.points) == 10 and len({p.t // 10 for p in h.points}) == 10
    assert [p.summary.users for p in h.points][-1] == 295
    assert h.points[-1].t - h.points[0].t <= 100
    h2 = TrendHistory(span_seconds=3600, max_points=5, scan_interval=1)
    for t in range(100):
        h2.add(t * 1000.0, QualitySummary())
    assert [p.t for p in h2.points] == [96000, 97000, 98000, 99000]   # the last hour
    h3 = TrendHistory(span_seconds=86400, max_points=3, scan_interval=60)
    for t in range(10):
        h3.add(t * 86400 / 3, QualitySummary())
    assert len(h3.points) == 3            # bounded in memory whatever the clock does


def test_since_gives_the_points_after_and_the_one_before():
    h = TrendHistory(span_seconds=1000, max_points=100, scan_interval=10)
    for t in (0, 10, 20, 30):
        h.add(float(t), summary(t, 0, 0.0, {}, {}, {}, {}))
    assert [p.t for p in h.since(None)] == [0, 10, 20, 30]
    assert [p.t for p in h.since(15)] == [10, 20, 30]
    assert [p.t for p in h.since(30)] == [30]
    back = points_from_dict(h.to_dict(15))
    assert [(p.t, p.summary.users) for p in back] == [(10, 10), (20, 20), (30, 30)]


def brute_force(histories, step, b):
    """Every worker's latest point at or before the end of step b, summed field by field."""
    out = QualitySummary()
    for h in histories:
        before = [p for p in h if p.t // step <= b]
        if before:
            out = out.merge(before[-1].summary)
    return out


points = st.lists(st.tuples(st.floats(0, 500), st.integers(0, 50), st.integers(0, 3),
                            st.sampled_from(["sports", "food", "a very long tag name"])),
                  max_size=25)


@settings(max_examples=200, deadline=None)
@given(st.lists(points, min_size=1, max_size=4), st.floats(1, 60), st.floats(-10, 520))
def test_merged_histories_are_the_sums_of_each_workers_latest_scan(raw, step, after):
    histories = []
    for worker in raw:
        h = [TrendPoint(t, summary(n, n // 2, n * 0.5, {lvl: n}, {lvl % 2: n}, {tag: n},
                                   {"dwell_time": n // 3}, events=3 * n))
             for t, n, lvl, tag in sorted(worker)]
        histories.append(h)
    merged = merge_histories(histories, step)
    assert [p.t for p in merged] == sorted({int(p.t // step) * step for h in histories
                                            for p in h})
    for p in merged:
        want = brute_force(histories, step, round(p.t / step))
        assert p.summary == want
    # what a page asking for the points after `after` gets: each worker's points after it and
    # its last one before; the merge of those is the same as the whole merge's tail
    tails = [[q for q in h if q.t > after] + [q for q in h if q.t <= after][-1:] for h in
             histories]
    tails = [sorted(t, key=lambda q: q.t) for t in tails]
    assert merge_histories(tails, step, after) == [p for p in merged if p.t > after]


def test_merge_latest_carries_a_worker_forward_between_its_points():
    a = [(0.0, 1), (20.0, 2)]
    b = [(10.0, 10)]
    assert merge_latest([a, b], 10, sum) == [(0, 1), (10, 11), (20, 12)]
    assert merge_latest([a, b], 10, sum, after=5) == [(10, 11), (20, 12)]


def cfg():
    return parse_config({
        "activity_levels": {"levels": 5},
        "interest_tags": {"categories": {"sports": [120], "a rather long category name of "
                                                               "entertainment news": [100]}},
        "behavior_preferences": {"rules": [
            {"name": "dwell_time", "metric": "avg_dwell_time", "window_days": 7, "op": ">",
             "threshold": 60},
            {"name": "prefers_many_distinct_items_over_the_whole_month",
             "metric": "unique_item_ratio", "window_days": 30, "op": ">",
             "threshold": 0.7}]}}, env={})


class Families:
    """A registry of fixed metric families (what the worker's collector yields)."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def test_metrics_export_every_level_type_tag_and_preference_and_exact_numerators():
    keys = BusinessKeys.of(cfg())
    a = summary(3, 2, 1.5, {1: 3}, {1: 3}, {"sports": 2}, {"dwell_time": 1}, events=12,
                freshness=30, non_default=9)
    b = summary(1, 1, 0.9, {4: 1}, {0: 1}, {}, {}, events=40, freshness=10, non_default=4)
    expositions = []
    for s in (a, b):
        text = generate_latest(Families([*quality_families(s), *business_families(s, keys)]))
        expositions.append({(x.name, tuple(sorted(x.labels.items()))): x.value
                            for f in text_string_to_metric_families(text.decode())
                            for x in f.samples})
    ex = expositions[1]

    def labels(name):
        return {dict(lbls).popitem()[1] for (n, lbls) in ex if n == name}
    assert labels("profiles_activity_level_users") == {"0", "1", "2", "3", "4"}
    assert labels("profiles_user_type_users") == {"0", "1"}
    assert labels("profiles_interest_tag_users") == \
        {"sports", "a rather long category name of entertainment news"}
    assert ex[("profiles_preference_users",
               (("preference", "prefers_many_distinct_items_over_the_whole_month"),))] == 0
    # Σ numerator / Σ sample users over the workers is the merged figure, for each of the five
    merged = a.merge(b).quality()
    users = sum(e[("profiles_quality_sample_users", ())] for e in expositions)
    for metric, value in merged.items():
        num = sum(e[("profiles_quality_numerator", (("metric", metric),))] for e in expositions)
        assert num / users == pytest.approx(value), metric


def figures(url, instance, s: QualitySummary, eps, dlq_rate, lag, p99, series, trend):
    return {"url": url, "instance": instance, "quality_scan": s.to_dict(),
            "rates": {"events_per_second": eps, "publishes_per_second": eps / 2,
                      "dlq_rate": dlq_rate},
            "lag": lag, "latency": {"event": {"p50": None, "p99": None},
                                    "ingest": {"p50": p99 / 2, "p99": p99}},
            "alerts": [], "series": series,
            "trend": {"step": 10.0, "span_seconds": 3600.0,
                      "points": [{"t": t, **x.sums()} for t, x in trend]}}


def test_dashboard_merge_adds_counts_and_sums_and_draws_every_level_and_type():
    keys = BusinessKeys.of(cfg())
    a = summary(3, 2, 1.5, {1: 3}, {1: 3}, {"sports": 2}, {"dwell_time": 1}, events=12)
    b = summary(1, 1, 0.9, {4: 1}, {1: 1}, {}, {}, events=40)
    sample = {"events_per_second": 0, "publishes_per_second": 0, "lag": 0, "p50": None,
              "p99": None}
    w1 = figures("http://a", 1, a, 100.0, 0.01, {"0": 5, "1": None}, 0.5,
                 [{**sample, "t": 100.0, "events_per_second": 100, "lag": 5, "p99": 0.5}],
                 [(100.0, a)])
    w2 = figures("http://b", 2, b, 300.0, 0.03, {"2": 7}, 0.2,
                 [{**sample, "t": 101.0, "events_per_second": 300, "lag": 7, "p99": 0.2}],
                 [(95.0, b), (105.0, a)])
    m = merge_figures([w1, w2], keys)
    assert m["quality_scan"]["users"] == 4
    assert m["quality_scan"]["quality"] == a.merge(b).quality()
    assert m["quality_scan"]["quality"]["average_confidence"] == pytest.approx(2.4 / 4)
    biz = m["quality_scan"]["business"]
    assert biz["activity_levels"] == {"0": 0, "1": 3, "2": 0, "3": 0, "4": 1}
    assert biz["user_types"] == {"0": 0, "1": 4}
    assert biz["behavior_preferences"] == {
        "dwell_time": 1, "prefers_many_distinct_items_over_the_whole_month": 0}
    assert m["rates"]["events_per_second"] == 400
    assert m["rates"]["dlq_rate"] == pytest.approx((1 + 9) / 400)
    assert m["lag"] == 12 and m["latency"]["ingest"]["p99"] == 0.5
    assert m["series"] == [{**sample, "t": 100.0, "events_per_second": 400, "lag": 12,
                            "p99": 0.5}]
    # trend: steps 90 (b's first), 100 (a + b), at 105 b's newer scan replaces its older one
    trend = m["trend"]["points"]
    assert [(p["t"], p["users"]) for p in trend] == [(90.0, 1), (100.0, 6)]
    assert trend[1]["levels"] == {"0": 0, "1": 6, "2": 0, "3": 0, "4": 0}
    assert trend[1]["preferences"]["dwell_time"] == 2
    assert merge_figures([], keys)["quality_scan"]["users"] == 0


def test_the_demo_table_shows_every_interest_tag():
    rec = {"user_id": 7, "interest_tags": ["entertainment", "technology", "sports", "fashion",
                                           "food"],
           "behavior_preferences": ["dwell_time"], "activity_level": 2, "user_type": 1,
           "confidence": 0.5}
    table = profile_table([rec])
    assert "entertainment, technology, sports, fashion, food" in table
