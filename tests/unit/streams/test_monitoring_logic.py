"""Alert rule evaluation, quality/business figures, and the seed's `--action` form (no broker)."""
from __future__ import annotations

import pytest

from deploy.cli import seed_form
from features.alerts import AlertEvaluator
from features.config import ConfigError, parse_config
from features.profile import Profile
from features.quality import QualitySummary


def rules(**extra):
    cfg = parse_config({"monitoring": {"alerts": [
        {"name": "dlq", "metric": "dlq_rate", "op": ">", "threshold": 0.01},
        {"name": "lag", "metric": "lag", "op": ">=", "threshold": 100, "for": 30,
         "severity": "critical"}], **extra}}, env={})
    return cfg.monitoring.alerts


def test_alert_fires_after_for_and_resolves():
    ev = AlertEvaluator(rules(), "worker-1")
    assert ev.evaluate({"dlq_rate": 0.001, "lag": 50}, 0) == []
    out = ev.evaluate({"dlq_rate": 0.05, "lag": 100}, 10)
    assert [(a["alert"], a["state"], a["value"]) for a in out] == [("dlq", "firing", 0.05)]
    assert ev.evaluate({"dlq_rate": 0.05, "lag": 120}, 39) == []          # lag pending 29 s
    out = ev.evaluate({"dlq_rate": 0.05, "lag": 120}, 40)
    assert [(a["alert"], a["state"], a["severity"]) for a in out] == \
        [("lag", "firing", "critical")]
    assert {a["alert"] for a in ev.active()} == {"dlq", "lag"}
    assert ev.evaluate({"dlq_rate": None, "lag": 120}, 41) == []          # no reading: no change
    out = ev.evaluate({"dlq_rate": 0.0, "lag": 10}, 50)
    assert sorted((a["alert"], a["state"]) for a in out) == [("dlq", "resolved"),
                                                              ("lag", "resolved")]
    assert ev.active() == []
    # a condition that stops holding before `for` never fires
    ev.evaluate({"lag": 500}, 100)
    ev.evaluate({"lag": 5}, 110)
    assert ev.evaluate({"lag": 500}, 135) == []


def test_alert_config_is_checked():
    with pytest.raises(ConfigError, match="unknown signal 'cpu'"):
        parse_config({"monitoring": {"alerts": [{"name": "x", "metric": "cpu", "op": ">",
                                                 "threshold": 1}]}}, env={})
    with pytest.raises(ConfigError, match="used twice"):
        parse_config({"monitoring": {"alerts": [
            {"name": "x", "metric": "lag", "op": ">", "threshold": 1},
            {"name": "x", "metric": "lag", "op": "<", "threshold": 1}]}}, env={})
    with pytest.raises(ConfigError, match="webhook_url"):
        parse_config({"monitoring": {"webhook_url": "file:///etc/passwd"}}, env={})
    names = [a.name for a in parse_config({}, env={}).monitoring.alerts]
    assert names == ["dlq_rate_high", "consumer_lag_high", "profiles_stale", "coverage_drop",
                     "worker_down", "partitioner_mismatch", "unkeyed_events"]


def profile(level, utype, tags, prefs, actions, confidence, feats=None):
    f = feats or {"106": [1060000001] if tags else [1060000000],
                  "107": [1070000001] if prefs else [1070000000],
                  "108": [1080000000 + level], "110": [1100000000 + utype]}
    return Profile(1, 1000, f, tags, prefs, level, utype, confidence,
                   {30: {"actions": actions}})


def test_quality_and_business_figures_merge():
    a, b = QualitySummary(), QualitySummary()
    a.add(profile(2, 1, ["sports"], ["click_frequency"], 40, 0.8), 1000, 900)
    a.add(profile(0, 0, [], [], 0, 0.0), 1000, 1000)
    b.add(profile(3, 1, ["sports", "food"], [], 10, 0.4), 2000, 1000)
    m = QualitySummary.from_dict(a.to_dict()).merge(b)
    q = m.quality()
    assert q["coverage"] == pytest.approx(2 / 3)
    assert q["average_confidence"] == pytest.approx(1.2 / 3)
    assert q["data_richness"] == pytest.approx(50 / 3)
    assert q["freshness_seconds"] == pytest.approx((100 + 0 + 1000) / 3)
    # non-default values: 4 of 4, 0 of 4, 3 of 4 (107 default)
    assert q["completeness"] == pytest.approx(7 / 12)
    biz = m.business()
    assert biz["activity_levels"] == {"0": 1, "2": 1, "3": 1}
    assert biz["user_types"] == {"0": 1, "1": 2}
    assert biz["top_interest_tags"] == {"sports": 2, "food": 1}
    assert biz["behavior_preferences"] == {"click_frequency": 1}
    assert QualitySummary().quality()["coverage"] is None


def test_seed_action_form():
    assert seed_form(["--action", "deploy", "--monitor"]) == ["deploy", "--monitor"]
    assert seed_form(["--config", "c.yaml", "--action", "restart", "--instance-id", "2"]) == \
        ["--config", "c.yaml", "restart", "--instance-id", "2"]
    assert seed_form(["--action", "health", "--config", "c.yaml"]) == \
        ["--config", "c.yaml", "health"]
    assert seed_form(["status"]) == ["status"]
    with pytest.raises(SystemExit, match="one of"):
        seed_form(["--action", "explode"])
    with pytest.raises(SystemExit, match="--monitor goes with --action deploy"):
        seed_form(["--action", "status", "--monitor"])
