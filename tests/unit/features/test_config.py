"""Config loading: defaults, env overrides, and refusal of bad configs naming the key."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from features.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[3]

BAD = [  # (config, key path the message must name, words it must contain)
    ({"interest_tags": {"colour": 1}}, "interest_tags.colour", "unknown key"),
    ({"nonsense": {}}, "nonsense", "unknown key"),
    ({"interest_tags": {"decay_factor": 0}}, "interest_tags.decay_factor", "greater than 0"),
    ({"interest_tags": {"decay_factor": 1.2}}, "interest_tags.decay_factor", "less than or equal"),
    ({"interest_tags": {"window_days": -1}}, "interest_tags.window_days", "greater than"),
    ({"interest_tags": {"window_days": 45}}, "interest_tags.window_days", "less than or equal"),
    ({"interest_tags": {"max_tags": "many"}}, "interest_tags.max_tags", "integer"),
    ({"activity_levels": {"metrics": {"daily_actions": [0, 15, 5]}}},
     "activity_levels.metrics.daily_actions", "ascending"),
    ({"activity_levels": {"combine": "average"}}, "activity_levels.combine", "actions"),
    ({"behavior_preferences": {"time_windows": [7, 1]}}, "behavior_preferences.time_windows",
     "ascending"),
    ({"behavior_preferences": {"rules": [{"name": "x", "metric": "clicks", "window_days": 7,
                                          "op": ">", "threshold": 1}]}},
     "behavior_preferences.rules.0.metric", "unknown metric"),
    ({"behavior_preferences": {"rules": [{"name": "x", "metric": "actions", "window_days": 7,
                                          "op": "=", "threshold": 1}]}},
     "behavior_preferences.rules.0.op", "'>'"),
    ({"user_types": {"window_days": 14}}, "user_types.window_days", "time_windows"),
    ({"events": {"timestamp_unit": "minutes"}}, "events.timestamp_unit", "'auto'"),
    ({"events": {"action_types": {"click": 1, "tap": 1}}}, "events.action_types", "share"),
    ({"interest_tags": {"categories": {"x": ["abc"]}}}, "interest_tags.categories", "decimal"),
    ({"kafka": {"partitions": 0}}, "kafka.partitions", "greater than or equal"),
    ({"kafka": {"broker": "not a broker"}}, "kafka.broker", "host:port"),
    ({"kafka": {"partitioner": "md5"}}, "kafka.partitioner", "'crc32'"),
    ({"kafka": {"partitioner": "consistent_random"}}, "kafka.partitioner", "its hash is 'crc32'"),
    ({"kafka": {"partitioner": "random"}}, "kafka.partitioner", "ignores keys"),
    ({"scheduled_update": {"weekly_full_update": "funday:03:00"}},
     "scheduled_update.weekly_full_update", "pattern"),
    ({"worker": {"web_port": 70000}}, "worker.web_port", "less than or equal"),
    ({"worker": {"auth": "reads"}}, "worker.auth", "'writes' or 'all'"),
    ({"worker": {"authentication": "all"}}, "worker.authentication", "unknown key"),
    ({"extra_features": {"106": {"extractor": "x"}}}, "extra_features.106", "three digits"),
    ([1, 2], "top level", "mapping"),
]


@pytest.mark.parametrize("raw,key,words", BAD)
def test_bad_config_is_refused_naming_the_key(raw, key, words):
    with pytest.raises(ConfigError) as err:
        parse_config(raw, "cfg.yaml", env={})
    msg = str(err.value)
    assert msg.startswith("cfg.yaml: ") and key in msg and words in msg, msg


def test_defaults_and_the_shipped_config_agree_with_the_spec():
    shipped = load_config(ROOT / "profile_config.yaml", env={})
    default = parse_config({}, env={})
    assert shipped.interest_tags.decay_factor == default.interest_tags.decay_factor == 0.95
    assert [r.name for r in shipped.behavior_preferences.rules] == \
        ["click_frequency", "interaction_pattern", "dwell_time"]
    assert shipped.kafka.partitions == 8 and shipped.worker.web_host == "127.0.0.1"
    assert shipped.kafka.partitioner == default.kafka.partitioner == "murmur2"
    assert shipped.monitoring.alerts == default.monitoring.alerts
    assert shipped.uses_embedded_broker       # the embedded broker's address
    assert shipped.kafka.client == default.kafka.client
    assert shipped.mapping_index_path == ROOT / "data" / "mapping_index.json"


def test_feature_sections_alone_are_a_complete_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"interest_tags": {"max_tags": 3}}))
    cfg = load_config(p, env={})
    assert cfg.interest_tags.max_tags == 3 and cfg.kafka.topics.user_events == "user-events"
    assert cfg.mapping_index_path == tmp_path / "mapping_index.json"


def test_env_overrides_deployment_settings():
    cfg = parse_config({}, env={"PROFILES_BROKER_URL": "kafka://k1:9092;kafka://k2:9092",
                                "PROFILES_DATA_DIR": "/srv/profiles",
                                "PROFILES_WEB_PORT": "7000"})
    assert cfg.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert str(cfg.data_dir) == "/srv/profiles" and cfg.worker.web_port == 7000
    assert not cfg.uses_embedded_broker
    with pytest.raises(ConfigError, match="worker.web_port"):
        parse_config({}, env={"PROFILES_WEB_PORT": "http"})


def test_client_settings_are_checked_and_the_retired_compat_key_is_refused():
    # (acks 1 only without transactions)
    cfg = parse_config({"kafka": {"processing_guarantee": "at_least_once",
                                  "client": {"session_timeout_seconds": 30,
                                             "heartbeat_interval_seconds": 3, "acks": 1}}},
                       env={})
    assert cfg.kafka.client.session_timeout_seconds == 30 and cfg.kafka.client.acks == 1
    with pytest.raises(ConfigError, match="at most a third of session_timeout_seconds"):
        parse_config({"kafka": {"client": {"session_timeout_seconds": 6,
                                           "heartbeat_interval_seconds": 3}}}, env={})
    with pytest.raises(ConfigError, match="kafka.client.acks"):
        parse_config({"kafka": {"client": {"acks": 0}}}, env={})
    with pytest.raises(ConfigError, match="kafka.compat: unknown key"):
        parse_config({"kafka": {"compat": "kafka"}}, env={})


def test_exactly_once_needs_librdkafka_outputs_and_acks_all():
    eos = {"processing_guarantee": "exactly_once_v2"}
    cfg = parse_config({"kafka": {**eos, "client": {"transaction_timeout_seconds": 20}}}, env={})
    assert cfg.kafka.exactly_once and cfg.kafka.client.transaction_timeout_seconds == 20
    with pytest.raises(ConfigError, match="output_client must be librdkafka"):
        parse_config({"kafka": {**eos, "output_client": "aiokafka"}}, env={})
    with pytest.raises(ConfigError, match="acks 'all'"):
        parse_config({"kafka": {**eos, "client": {"acks": 1}}}, env={})
    with pytest.raises(ConfigError, match="processing_guarantee"):
        parse_config({"kafka": {"processing_guarantee": "exactly_once"}}, env={})
    assert not parse_config({"kafka": {"processing_guarantee": "at_least_once",
                                       "output_client": "aiokafka"}}, env={}).kafka.exactly_once


def test_the_delivery_timeout_stays_below_the_time_a_frozen_workers_partitions_take_to_move():
    def client(**kw):
        return parse_config({"kafka": {"client": kw}}, env={}).kafka.client

    assert client().delivery_timeout_ms() == 7000                   # 10 s less 1 s less 2 s
    assert client(session_timeout_seconds=6, heartbeat_interval_seconds=2) \
        .delivery_timeout_ms() == 2000                              # half of 6 less 2
    assert client(delivery_timeout_seconds=8.5).delivery_timeout_ms() == 8500
    for kw in ({}, {"session_timeout_seconds": 3, "heartbeat_interval_seconds": 1},
               {"session_timeout_seconds": 300, "heartbeat_interval_seconds": 100}):
        c = client(**kw)
        assert 0 < c.delivery_timeout_ms() < \
            (c.session_timeout_seconds - c.heartbeat_interval_seconds) * 1000
    with pytest.raises(ConfigError, match="delivery_timeout_seconds must be below"):
        client(delivery_timeout_seconds=9)
    with pytest.raises(ConfigError, match="must be above linger_ms"):     # librdkafka's rule
        client(delivery_timeout_seconds=0.5, linger_ms=1000)
    from streams.io.producer_settings import librdkafka_producer_settings
    cfg = parse_config({"kafka": {"client": {"delivery_timeout_seconds": 4}}}, env={})
    assert librdkafka_producer_settings(cfg)["message.timeout.ms"] == 4000


def test_yaml_is_never_executed(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("interest_tags: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p, env={})


def test_cli_config_check_names_the_bad_key(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("interest_tags:\n  decay_factor: 3\n  max_tagz: 4\n")
    r = subprocess.run([sys.executable, "-m", "deploy", "config", "check", str(p)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1
    assert "interest_tags.decay_factor" in r.stderr and "interest_tags.max_tagz: unknown key" \
        in r.stderr
    ok = subprocess.run([sys.executable, "-m", "deploy", "config", "check",
                         str(ROOT / "profile_config.yaml")], capture_output=True, text=True,
                        cwd=ROOT)
    assert ok.returncode == 0 and "config OK" in ok.stdout
