"""The seed's quality metrics (画像质量指标) and business metrics (业务指标) over a set of
profiles. Pure; the worker feeds it a sample of its users, the CLI merges workers' summaries.

- coverage: share of users with at least one event in the 30-day window (有画像的用户占比)
- average confidence (平均置信度)
- data richness: mean events per user in the 30-day window (平均每个用户的行为数据点数)
- freshness: mean seconds between the stream time and the `as_of` of the user's last published
  record (画像新鲜度; 0 when every profile is as of now)
- completeness: share of (user, feature) pairs with a value other than an empty user's
  (特征的非默认值比例)
Business: activity-level and user-type distributions, interest tags and preferences by users.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from features.config import ProfileConfig
from features.profile import ARRAY_KEYS, BASE, Profile

DEFAULTS = {fid: [int(fid) * BASE] for fid in ARRAY_KEYS}
QUALITY_METRICS = ("coverage", "average_confidence", "data_richness", "freshness_seconds",
                   "completeness")
MAX_FILLED_LEVELS = 100     # activity levels drawn/exported at 0 when absent (config allows 10^7)


@dataclass(frozen=True)
class BusinessKeys:
    """Every key a business distribution shows, counted or not, from the config: so a chart
    draws level 3 at 0 and a Prometheus series exists before its first user."""
    levels: tuple[int, ...]
    types: tuple[int, ...]
    tags: tuple[str, ...]
    preferences: tuple[str, ...]

    @classmethod
    def of(cls, cfg: ProfileConfig) -> "BusinessKeys":
        return cls(tuple(range(min(cfg.activity_levels.levels, MAX_FILLED_LEVELS))),
                   tuple(range(cfg.user_types.types)), tuple(cfg.interest_tags.categories),
                   tuple(r.name for r in cfg.behavior_preferences.rules))


def filled(counts: Counter, keys: Iterable[Any]) -> dict[str, int]:
    """`counts` for every key in `keys` (0 when absent), in that order, then any other key
    counted (sorted): labels are strings."""
    out = {str(k): counts.get(k, 0) for k in keys}
    for k in sorted(counts, key=str):
        out.setdefault(str(k), counts[k])
    return out


@dataclass
class QualitySummary:
    users: int = 0
    covered: int = 0
    confidence_sum: float = 0.0
    events_sum: int = 0
    freshness_sum: float = 0.0
    non_default: int = 0
    levels: Counter = field(default_factory=Counter)
    types: Counter = field(default_factory=Counter)
    tags: Counter = field(default_factory=Counter)
    preferences: Counter = field(default_factory=Counter)

    def add(self, profile: Profile, stream_time: int, published_as_of: int) -> None:
        self.users += 1
        events = profile.metrics[30]["actions"] if 30 in profile.metrics else 0
        self.covered += events > 0
        self.events_sum += events
        self.confidence_sum += profile.confidence
        self.freshness_sum += max(0, stream_time - max(published_as_of, 0))
        self.non_default += sum(profile.features[k] != DEFAULTS[k] for k in ARRAY_KEYS)
        self.levels[profile.activity_level] += 1
        self.types[profile.user_type] += 1
        self.tags.update(profile.interest_tags)
        self.preferences.update(profile.behavior_preferences)

    def merge(self, other: "QualitySummary") -> "QualitySummary":
        out = QualitySummary()
        for f in ("users", "covered", "confidence_sum", "events_sum", "freshness_sum",
                  "non_default"):
            setattr(out, f, getattr(self, f) + getattr(other, f))
        for f in ("levels", "types", "tags", "preferences"):
            setattr(out, f, getattr(self, f) + getattr(other, f))
        return out

    def quality(self) -> dict[str, float | None]:
        n = self.users
        if not n:
            return {"coverage": None, "average_confidence": None, "data_richness": None,
                    "freshness_seconds": None, "completeness": None}
        return {"coverage": self.covered / n,
                "average_confidence": self.confidence_sum / n,
                "data_richness": self.events_sum / n,
                "freshness_seconds": self.freshness_sum / n,
                "completeness": self.non_default / (n * len(ARRAY_KEYS))}

    def business(self, top: int = 10) -> dict:
        return {"activity_levels": {str(k): v for k, v in sorted(self.levels.items())},
                "user_types": {str(k): v for k, v in sorted(self.types.items())},
                "top_interest_tags": dict(self.tags.most_common(top)),
                "behavior_preferences": dict(self.preferences.most_common())}

    def numerators(self) -> dict[str, float]:
        """Each quality figure times the users sampled (the figure's sum over the sampled
        users): summed across workers and divided by the summed users, the exact figure of the
        union (what Prometheus and Grafana merge)."""
        return {"coverage": self.covered, "average_confidence": self.confidence_sum,
                "data_richness": self.events_sum, "freshness_seconds": self.freshness_sum,
                "completeness": self.non_default / len(ARRAY_KEYS)}

    def distributions(self, keys: BusinessKeys) -> dict[str, dict[str, int]]:
        """Users by activity level, user type, interest tag and preference, every configured
        key present (0 when no sampled user has it)."""
        return {"activity_levels": filled(self.levels, keys.levels),
                "user_types": filled(self.types, keys.types),
                "interest_tags": filled(self.tags, keys.tags),
                "behavior_preferences": filled(self.preferences, keys.preferences)}

    def sums(self) -> dict:
        """The raw sums and counts alone: what `from_dict` reads and `merge` adds."""
        return {"users": self.users, "covered": self.covered,
                "confidence_sum": self.confidence_sum, "events_sum": self.events_sum,
                "freshness_sum": self.freshness_sum, "non_default": self.non_default,
                "levels": {str(k): v for k, v in self.levels.items()},
                "types": {str(k): v for k, v in self.types.items()},
                "tags": dict(self.tags), "preferences": dict(self.preferences)}

    def to_dict(self) -> dict:
        """Raw sums (mergeable across workers) plus the derived figures."""
        return {**self.sums(), "quality": self.quality(), "business": self.business()}

    @classmethod
    def from_dict(cls, d: dict) -> "QualitySummary":
        out = cls(d["users"], d["covered"], d["confidence_sum"], d["events_sum"],
                  d["freshness_sum"], d["non_default"])
        out.levels = Counter({int(k): v for k, v in d["levels"].items()})
        out.types = Counter({int(k): v for k, v in d["types"].items()})
        out.tags, out.preferences = Counter(d["tags"]), Counter(d["preferences"])
        return out
