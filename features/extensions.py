"""New features by config plus one extractor (the seed's 扩展开发; docs/EXTENDING.md).

    extra_features:
      "111": {extractor: dominant_action, max_values: 1}

An extractor is `fn(metrics, engine, params) -> list[int]`: from one user's window metrics as of
the profile's time (`metrics[W]`: features.metrics.window_metrics of the last W days, for every
window the features use, 30 among them, and those in its `windows`) and the engine's config
(`engine.cfg`, `engine.action_names`) it returns the values k;
the published array is `[F·10^7 + k, ...]` (at most max_values), `[F·10^7]` when empty. Every
path computes the metrics of all its users at once (features.columnar) and calls the extractor
per user on them, so an extra feature costs no per-user state walk. Register an extractor with
`@register_extractor("name")`, or name it in config as "package.module:function".
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from features.config import ProfileConfig

Metrics = dict[int, dict[str, Any]]     # window (days) -> that window's metrics


class Engine(Protocol):
    """What an extractor may read of features.profile.FeatureEngine."""
    cfg: ProfileConfig
    action_names: dict[str, int]


Extractor = Callable[[Metrics, Engine, dict[str, Any]], Iterable[int]]
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
    windows: tuple[int, ...] = ()       # windows it reads beyond the features' own

    def values(self, metrics: Metrics, engine: Engine) -> list[int]:
        ks = [int(k) for k in self.fn(metrics, engine, self.params)][:self.max_values]
        base = self.feature_id * 10 ** 7
        return [base + k for k in ks] or [base]


def load_extensions(cfg: ProfileConfig) -> dict[str, ExtraFeature]:
    out = {}
    for fid, x in cfg.extra_features.items():
        windows = {*x.windows}
        if isinstance(x.params.get("window_days"), int):    # the conventional parameter
            windows.add(x.params["window_days"])
        out[fid] = ExtraFeature(int(fid), resolve_extractor(x.extractor), x.max_values,
                                x.params, tuple(sorted(windows)))
    return out


@register_extractor("dominant_action")
def dominant_action(metrics: Metrics, engine: Engine, params: dict[str, Any]) -> list[int]:
    """Example feature: 1 + the most frequent action code over `window_days` (default 30);
    ties go to the lower code; nothing when the window is empty."""
    m = metrics[params.get("window_days", 30)]
    rates = [(m[f"rate_{name}"], -code) for name, code in engine.action_names.items()]
    best_rate, neg_code = max(rates)
    return [1 - neg_code] if best_rate > 0 else []
