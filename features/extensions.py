"""New features by config plus one registered extractor (the seed's 扩展开发).

    extra_features:
      "111": {extractor: dominant_action, max_values: 1}

An extractor is `fn(state, T, metrics, engine, params) -> list[int]` returning values k; the
published array is `[F·10^7 + k, ...]` (at most max_values), `[F·10^7]` when empty. Register one
with `@register_extractor("name")`, or name it in config as "package.module:function".
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from features.config import ProfileConfig
from features.state import UserState


class FeatureEngine(Protocol):
    """What an extractor may use of features.profile.FeatureEngine."""
    action_names: dict[str, int]

    def metrics(self, state: UserState, T: int, W: int) -> dict[str, Any]: ...


Extractor = Callable[..., list[int]]
_REGISTRY: dict[str, Extractor] = {}


def register_extractor(name: str) -> Callable[[Extractor], Extractor]:
    def deco(fn: Extractor) -> Extractor:
        _REGISTRY[name] = fn
        return fn
    return deco


def resolve_extractor(ref: str) -> Extractor:
    if ref in _REGISTRY:
        return _REGISTRY[ref]
    if ":" in ref:
        module, name = ref.split(":", 1)
        fn = getattr(importlib.import_module(module), name, None)
        if callable(fn):
            return fn
    raise ValueError(f"extractor {ref!r} is neither registered nor an importable "
                     "'module:function'")


@dataclass(frozen=True)
class ExtraFeature:
    feature_id: int
    fn: Extractor
    max_values: int
    params: dict[str, Any]

    def values(self, state: UserState, T: int, metrics: dict[int, dict[str, Any]],
               engine: FeatureEngine) -> list[int]:
        ks = [int(k) for k in self.fn(state, T, metrics, engine, self.params)][:self.max_values]
        base = self.feature_id * 10 ** 7
        return [base + k for k in ks] or [base]


def load_extensions(cfg: ProfileConfig) -> dict[str, ExtraFeature]:
    return {fid: ExtraFeature(int(fid), resolve_extractor(x.extractor), x.max_values, x.params)
            for fid, x in cfg.extra_features.items()}


@register_extractor("dominant_action")
def dominant_action(state: UserState, T: int, metrics: dict[int, dict[str, Any]],
                    engine: FeatureEngine, params: dict[str, Any]) -> list[int]:
    """Example feature: 1 + the most frequent action code over `window_days` (default 30);
    ties go to the lower code; nothing when the window is empty."""
    m = metrics.get(params.get("window_days", 30)) or engine.metrics(
        state, T, params.get("window_days", 30))
    rates = [(m[f"rate_{name}"], -code) for name, code in engine.action_names.items()]
    best_rate, neg_code = max(rates)
    return [1 - neg_code] if best_rate > 0 else []
