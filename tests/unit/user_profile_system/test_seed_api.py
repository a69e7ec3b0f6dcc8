"""The seed README's example (基础使用), copied unchanged."""
from __future__ import annotations

import orjson

from features.config import parse_config
from user_profile_system import UserProfileSystem


def test_seed_readme_basic_usage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # --- from the seed README, section 2 ---
    from user_profile_system import UserProfileSystem

    # 初始化系统
    profile_system = UserProfileSystem("data/")

    # 生成用户行为数据
    user_sequence = [
        {"item_id": 12345, "timestamp": 1640995200, "action_type": 0},
        {"item_id": 12346, "timestamp": 1640995800, "action_type": 0},
    ]

    # 更新用户画像
    profile = profile_system.update_user_profile(123, user_sequence)

    # 获取数组特征
    features = profile_system.get_user_array_features(123)
    print(features)
    # --- end of the seed's example ---
    assert features == {"106": [1060000000], "107": [1070000000], "108": [1080000001],
                        "110": [1100000000]}    # 2 actions / 7 days > 0: level 1
    assert profile["features"] == features and profile["version"] == 1
    assert profile["as_of"] == 1640995800 and profile["confidence"] == 0.0952
    assert (tmp_path / "data" / "mapping_index.json").exists()
    profile_system.close()


def test_seed_api_persists_and_uses_item_features(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "item_feat_dict.json").write_bytes(orjson.dumps({"7": {"111": 1}}))
    with UserProfileSystem(data) as ps:
        ps.update_user_profile(5, [{"item_id": 7, "timestamp": 1640995200 + i, "action_type": 1}
                                   for i in range(3)])
        ps.update_user_profile(5, [{"item_id": 7, "timestamp": "bad", "action_type": 1}])
        assert ps.rejections[-1][2].reason == "bad_type"
    with UserProfileSystem(data) as again:      # state survived the close
        assert again.get_user_array_features(5)["106"] == [1060000002]   # technology
        assert again.get_user_array_features(999)["106"] == [1060000000]


def test_seed_api_takes_a_config(tmp_path):
    cfg = parse_config({"interest_tags": {"min_frequency": 1}}, base_dir=tmp_path, env={})
    with UserProfileSystem(tmp_path / "d", cfg) as ps:
        ps.add_item_features(1, {"100": 1})
        rec = ps.update_user_profile(1, [{"item_id": 1, "timestamp": 1640995200,
                                          "action_type": 1}])
        assert rec["interest_tags"] == ["entertainment"]
