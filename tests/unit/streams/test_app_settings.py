"""Settings the worker's Faust app takes from profile_config.yaml."""
from __future__ import annotations

from features.config import load_config
from streams.app import create_app, instance_for


def _app(tmp_path, extra: str = ""):
    path = tmp_path / "profiles.yaml"
    path.write_text(f"worker:\n  data_dir: {tmp_path / 'data'}\n{extra}")
    cfg = load_config(path)
    return create_app(cfg, instance_for(cfg, 1))


def test_workers_keep_no_standby_copies_unless_configured(tmp_path):
    # a standby copy once lacked changelog records it counted as read (docs/RELIABILITY.md)
    assert _app(tmp_path).conf.table_standby_replicas == 0
    assert _app(tmp_path, "  standby_replicas: 1\n").conf.table_standby_replicas == 1
