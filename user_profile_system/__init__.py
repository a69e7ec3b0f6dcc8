"""The seed README's Python API, kept for its users (its import line too):

    from user_profile_system import UserProfileSystem
    profile_system = UserProfileSystem("data/")
    profile = profile_system.update_user_profile(123, user_sequence)
    features = profile_system.get_user_array_features(123)

Events are applied and profiles evaluated by the columnar core, as in the stream; states
persist in a state store (streams.state.rocksdb) under data_dir, keyed and encoded as the
stream's (streams.state.table_keys, features.columnar.codec). Records the seed's shape omits
(user_id) are filled in; bad records are skipped and kept in `rejections` with their reason, as
the stream's dead-letter topic would.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from features import columnar
from features.columnar import ColumnarState
from features.config import ProfileConfig, load_config, parse_config
from features.events import Rejection
from features.profile import ARRAY_KEYS, Profile
from features.runtime import FeatureRuntime
from features.state import APPLIED, DUPLICATE
from streams.state.rocksdb import open_store
from streams.state.table_keys import user_key


class UserProfileSystem:
    def __init__(self, data_dir: str | Path = "data/",
                 config: str | Path | ProfileConfig | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(config, ProfileConfig):
            self.cfg = config
        elif config is not None:
            self.cfg = load_config(config)
        else:  # the seed kept everything in data_dir, mapping index included
            self.cfg = parse_config({}, "<defaults>", self.data_dir, env={})
        items = self.data_dir / "item_feat_dict.json"
        rt = FeatureRuntime.from_config(self.cfg, items if items.exists() else None)
        self.engine, self.catalog, self.parser = rt.engine, rt.catalog, rt.parser
        self.rejections: list[tuple[int, dict, Rejection | str]] = []
        self._store = open_store(self.data_dir / "user_states")

    @property
    def item_features(self) -> dict[int, dict[str, Any]]:
        return self.catalog.features

    def add_item_features(self, item_id: int, features: dict[str, Any]) -> None:
        self.catalog.put(item_id, features)

    def _state(self, user_id: int) -> ColumnarState:
        raw = self._store.get(user_key(user_id))
        return columnar.decode(raw, self.engine.tz) if raw is not None else ColumnarState.new()

    def _evaluate(self, user_id: int, state: ColumnarState) -> Profile:
        return columnar.evaluate_many(self.engine, [user_id], [state])[0]

    def update_user_profile(self, user_id: int, user_sequence: list[dict]) -> dict[str, Any]:
        """Apply the records in order and return the profile record (FEATURES.md §7)."""
        state = self._state(user_id)
        for record in user_sequence:
            obj = {"user_id": user_id, **record}
            ev = self.parser.check_line(obj)
            if isinstance(ev, Rejection):
                self.rejections.append((user_id, record, ev))
                continue
            outcome = columnar.apply(state, ev, self.catalog.categories(ev.item_id),
                                     self.engine.rules)
            if outcome != APPLIED and outcome != DUPLICATE:
                self.rejections.append((user_id, record, outcome))
        profile = self._evaluate(user_id, state) if not state.empty else None
        if profile is not None and profile.digest() != state.published_digest:
            state.version += 1
            state.published_digest = profile.digest()
        self._store.put(user_key(user_id), columnar.encode(state))
        if profile is None:
            return self._default_record(user_id)
        return profile.to_record(state.version, "event", time.time())

    def get_user_array_features(self, user_id: int) -> dict[str, list[int]]:
        state = self._state(user_id)
        if state.empty:
            return self._default_record(user_id)["features"]
        return {k: v for k, v in self._evaluate(user_id, state).features.items()}

    def _default_record(self, user_id: int) -> dict[str, Any]:
        feats = {k: [int(k) * 10 ** 7] for k in ARRAY_KEYS}
        return {"user_id": user_id, "version": 0, "as_of": None, "trigger": "event",
                "features": feats, "interest_tags": [], "behavior_preferences": [],
                "activity_level": 0, "user_type": 0, "confidence": 0.0,
                "updated_at": time.time()}

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> UserProfileSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
