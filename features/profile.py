"""Features 106/107/108/110 and confidence (FEATURES.md §4) from a state as of T."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import orjson

from features.config import COMPARE, ProfileConfig
from features.mapping_index import MappingIndex
from features.metrics import category_totals, window_metrics, window_metrics_all
from features.state import StateRules, UserState

if TYPE_CHECKING:
    from features.extensions import ExtraFeature

BASE = 10 ** 7
EVENT_TRIGGER = "event"     # a record's `trigger` when events changed it (else the scheduled run's)
ARRAY_KEYS = ("106", "107", "108", "110")


@dataclass(frozen=True)
class Profile:
    user_id: int
    as_of: int
    features: dict[str, list[int]]          # "106" -> [1060000002, ...] (+ extra features)
    interest_tags: list[str]
    behavior_preferences: list[str]
    activity_level: int
    user_type: int
    confidence: float
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    def arrays(self) -> tuple:
        """What decides whether a profile changed (and is published)."""
        return arrays_of(self.features)

    def digest(self) -> int:
        """A stable 62-bit fingerprint of the arrays (kept in state to detect a change). A
        profile from the columnar evaluation carries it, computed there (`_digest`, not a
        field: it takes no part in equality or repr)."""
        d = self.__dict__.get("_digest")
        return digest_of(self.features) if d is None else d

    def to_record(self, version: int, trigger: str, updated_at: float) -> dict[str, Any]:
        return {"user_id": self.user_id, "version": version, "as_of": self.as_of,
                "trigger": trigger, "features": self.features,
                "interest_tags": self.interest_tags,
                "behavior_preferences": self.behavior_preferences,
                "activity_level": self.activity_level, "user_type": self.user_type,
                "confidence": self.confidence, "updated_at": updated_at}


def arrays_of(features: dict[str, list[int]]) -> tuple:
    return tuple(tuple(features[k]) for k in sorted(features))


def digest_of(features: dict[str, list[int]]) -> int:
    """`Profile.digest` of a profile with these feature arrays."""
    raw = orjson.dumps(arrays_of(features))
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") >> 2


class FeatureEngine:
    """Config + mapping index compiled once; `evaluate(user_id, state, T)` is pure."""

    def __init__(self, cfg: ProfileConfig, index: MappingIndex,
                 extensions: dict[str, ExtraFeature] | None = None):
        self.cfg = cfg
        self.index = index
        ev = cfg.events
        self.tz = ev.tz_offset_seconds
        self.gap = ev.session_gap_seconds
        self.rules = StateRules(self.tz, self.gap)
        self.action_names = dict(ev.action_types)
        it = cfg.interest_tags
        self.weights = {code: cfg.action_weight(code) for code in ev.action_types.values()}
        # config order decides ties; k (index position) names the category in state and ids
        self.categories = [(pos, index.k("106", name), name)
                           for pos, name in enumerate(it.categories)]
        self.rule_ids = [(rule, index.k("107", rule.name))
                         for rule in cfg.behavior_preferences.rules]
        if extensions is None:
            from features.extensions import load_extensions
            extensions = load_extensions(cfg)
        self.extensions = extensions
        self.windows = sorted({it.window_days, cfg.activity_levels.window_days,
                               cfg.user_types.window_days, 30,
                               *(r.window_days for r in cfg.behavior_preferences.rules),
                               *(w for x in extensions.values() for w in x.windows)})

    def metrics(self, state: UserState, T: int, W: int) -> dict[str, Any]:
        return window_metrics(state, T, W, self.tz, self.gap, self.action_names)

    def metrics_all(self, state: UserState, T: int, windows: Iterable[int]
                    ) -> dict[int, dict[str, Any]]:
        """{W: metrics(state, T, W)} for each W, in one pass."""
        return window_metrics_all(state, T, windows, self.tz, self.gap, self.action_names)

    def evaluate(self, user_id: int, state: UserState, T: int | None = None) -> Profile:
        T = state.T if T is None else T
        if T < state.T:
            raise ValueError(f"as_of {T} is before the user's T {state.T}")
        cfg = self.cfg
        m = self.metrics_all(state, T, self.windows)

        # 106 interest tags
        it = cfg.interest_tags
        totals = category_totals(state, T, it.window_days, self.tz, it.decay_factor,
                                 self.weights)
        ranked = []
        for pos, k, name in self.categories:
            score, count = totals.get(k, (0.0, 0))
            if count >= it.min_frequency:
                ranked.append((-round(score, 6), pos, k, name))
        ranked.sort()
        top = ranked[:it.max_tags]
        f106 = [106 * BASE + k for _, _, k, _ in top] or [106 * BASE]

        # 107 behavior preferences
        held = []
        for rule, k in self.rule_ids:
            wm = m[rule.window_days]
            if wm["actions"] >= rule.min_actions and \
                    COMPARE[rule.op](wm[rule.metric], rule.threshold):
                held.append((k, rule.name))
        held = held[:cfg.behavior_preferences.max_preferences]
        f107 = [107 * BASE + k for k, _ in held] or [107 * BASE]

        # 108 activity level
        al = cfg.activity_levels
        wm = m[al.window_days]
        daily = wm["actions"] / al.window_days
        level_a = min(al.levels - 1, sum(1 for t in al.metrics.daily_actions if daily > t))
        level_s = min(al.levels - 1, sum(1 for t in al.metrics.session_duration
                                         if wm["avg_session_duration"] > t))
        level = {"actions": level_a, "min": min(level_a, level_s), "max": max(level_a, level_s),
                 "mean_floor": (level_a + level_s) // 2}[al.combine]

        # 110 user type
        ut = cfg.user_types
        wm = m[ut.window_days]
        t1 = ut.criteria.type_1
        user_type = int(wm["sessions"] >= t1.min_sessions and wm["actions"] >= t1.min_actions)

        features = {"106": f106, "107": f107, "108": [108 * BASE + level],
                    "110": [110 * BASE + user_type]}
        for fid, extractor in self.extensions.items():
            features[fid] = extractor.values(m, self)
        confidence = round(1 - math.exp(-m[30]["actions"] / 20), 4)
        return Profile(user_id, T, features, [n for _, _, _, n in top],
                       [n for _, n in held], level, user_type, confidence, m)
