"""Extensibility as the seed's 扩展开发 describes it: a new feature by config plus one extractor,
and item features from a pluggable source class named in config."""
from __future__ import annotations

from features import mapping_index
from features.catalog import CategoryMatcher, ItemCatalog, load_item_source
from features.config import parse_config
from features.events import Event
from features.extensions import register_extractor
from features.profile import FeatureEngine
from features.state import UserState, apply

D0 = 20000 * 86400


@register_extractor("session_bucket")
def session_bucket(metrics, engine, params):
    """Feature 111 example: sessions in the last 7 days, bucketed by params['edges']."""
    sessions = metrics[7]["sessions"]
    return [sum(sessions > e for e in params["edges"])] if sessions else []


class ExternalDataSource:
    """The seed's shape: items fetched on demand from another system (a dict here)."""
    calls: list[int] = []

    def __init__(self, table):
        self.table = {int(k): v for k, v in table.items()}

    def fetch_item_features(self, item_id):
        ExternalDataSource.calls.append(item_id)
        return self.table.get(item_id)


def test_new_feature_111_by_config_and_extractor(tmp_path):
    cfg = parse_config({"mapping_index": str(tmp_path / "i.json"), "extra_features": {
        "111": {"extractor": "session_bucket", "max_values": 5, "params": {"edges": [0, 2]}},
        "112": {"extractor": "dominant_action"}}}, env={})
    idx = mapping_index.sync(cfg)
    engine = FeatureEngine(cfg, idx)
    st = UserState()
    for t in (D0, D0 + 7200, D0 + 14400):            # three sessions, clicks
        apply(st, Event(1, 1, t, 1, None, None), (), engine.rules)
    p = engine.evaluate(1, st)
    assert p.features["111"] == [1110000002]           # 3 > 0 and 3 > 2
    assert p.features["112"] == [1120000002]           # click (code 1) -> k 2
    assert engine.evaluate(1, UserState(T=D0), D0).features["111"] == [1110000000]


def test_extractor_by_module_path(tmp_path):
    cfg = parse_config({"mapping_index": str(tmp_path / "i.json"), "extra_features": {
        "111": {"extractor": "tests.unit.features.test_extensions:session_bucket",
                "params": {"edges": [5]}}}}, env={})
    engine = FeatureEngine(cfg, mapping_index.sync(cfg))
    st = UserState()
    apply(st, Event(1, 1, D0, 1, None, None), (), engine.rules)
    assert engine.evaluate(1, st).features["111"] == [1110000000]


def test_pluggable_item_source(tmp_path):
    cfg = parse_config({"mapping_index": str(tmp_path / "i.json"), "item_source": {
        "class": "tests.unit.features.test_extensions:ExternalDataSource",
        "options": {"table": {"42": {"112": 7}}}}}, env={})
    idx = mapping_index.sync(cfg)
    catalog = ItemCatalog(CategoryMatcher(cfg, idx), load_item_source(cfg))
    ExternalDataSource.calls.clear()
    assert catalog.categories(42) == (idx.k("106", "technology"),)
    assert catalog.categories(42) == (idx.k("106", "technology"),)   # cached
    assert catalog.categories(43) == ()
    assert ExternalDataSource.calls == [42, 43]
