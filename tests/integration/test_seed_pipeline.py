"""The seed README's 实时更新 example against a running worker (only the import differs)."""
from __future__ import annotations

import pytest

from deploy.broker import free_port
from features.config import load_config
from tests.harness import profile_worker, write_config

pytestmark = pytest.mark.integration


def test_seed_readme_realtime_example(broker, workers, tmp_path, monkeypatch):
    port = free_port()
    cfg_path = write_config(tmp_path / "cfg.yaml", broker, kafka={"partitions": 2},
                            worker={"web_port": port, "data_dir": str(tmp_path / "data")})
    profile_worker(workers, cfg_path, 1, port, "w").start().wait_healthy()
    monkeypatch.setenv("PROFILES_CONFIG", str(cfg_path))
    monkeypatch.chdir(tmp_path)
    # --- from the seed README, section 3 (only the import differs) ---
    from streams import ProfileUpdatePipeline

    # 初始化流水线
    pipeline = ProfileUpdatePipeline("data/")

    # 启动系统
    pipeline.start()

    # 添加用户事件
    pipeline.add_user_event(
        user_id=123,
        item_id=12345,
        event_type="click",
        additional_data={"dwell_time": 30}
    )

    # 获取用户特征
    features = pipeline.get_user_features(123)
    # --- end of the seed's example ---
    pipeline.stop()
    assert features == {"106": [1060000000], "107": [1070000000], "108": [1080000001],
                        "110": [1100000000]}
    assert load_config(cfg_path, env={}).worker.web_port == port
