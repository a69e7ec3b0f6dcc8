"""Item features and the categories they fall in (FEATURES.md §1.2–1.3)."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Iterable, Protocol

import orjson

from features.config import ProfileConfig
from features.mapping_index import MappingIndex


class ItemSource(Protocol):
    """A pluggable source of item features (the seed's ExternalDataSource)."""

    def fetch_item_features(self, item_id: int) -> dict[str, Any] | None: ...


class CatalogError(ValueError):
    pass


class CategoryMatcher:
    """Compiled category rules: features dict -> tuple of category k (mapping index)."""

    def __init__(self, cfg: ProfileConfig, index: MappingIndex):
        self.rules: list[tuple[int, dict[str, frozenset | None]]] = []
        for name, rule in cfg.interest_tags.categories.items():
            k = index.k("106", name)
            if isinstance(rule, list):   # presence of any listed feature id
                self.rules.append((k, {str(f): None for f in rule}))
            else:                        # feature id -> accepted values
                self.rules.append((k, {str(f): frozenset(_norm(v) for v in vals)
                                       for f, vals in rule.items()}))

    def categories(self, features: dict[str, Any] | None) -> tuple[int, ...]:
        if not features:
            return ()
        out = []
        for k, wanted in self.rules:
            for fid, accepted in wanted.items():
                if fid not in features:
                    continue
                if accepted is None:
                    out.append(k)
                    break
                value = features[fid]
                values = value if isinstance(value, list) else [value]
                if any(_norm(v) in accepted for v in values):
                    out.append(k)
                    break
        return tuple(sorted(out))


def _norm(v: Any) -> Any:
    """Compare values as JSON values: 7 and 7.0 match, "7" is a different value."""
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v if isinstance(v, (int, str, float, bool)) or v is None else str(v)


class ItemCatalog:
    """item_id -> features; categories resolved once per item and cached."""

    def __init__(self, matcher: CategoryMatcher, source: ItemSource | None = None):
        self.matcher = matcher
        self.source = source
        self.features: dict[int, dict[str, Any]] = {}
        self._cats: dict[int, tuple[int, ...]] = {}

    def put(self, item_id: int, features: dict[str, Any]) -> None:
        """A later record for the same item replaces the earlier one (§1.2)."""
        self.features[item_id] = {str(k): v for k, v in features.items()}
        self._cats.pop(item_id, None)

    def categories(self, item_id: int) -> tuple[int, ...]:
        cats = self._cats.get(item_id)
        if cats is None:
            feats = self.features.get(item_id)
            if feats is None and self.source is not None:
                fetched = self.source.fetch_item_features(item_id)
                if fetched is not None:
                    self.put(item_id, fetched)
                    feats = self.features[item_id]
            cats = self.matcher.categories(feats)
            if feats is not None:   # unknown items are asked again later: they may arrive
                self._cats[item_id] = cats
        return cats

    def __len__(self) -> int:
        return len(self.features)

    def load_file(self, path: str | Path) -> int:
        """TAAC-style item_feat_dict.json ({"item_id": {fid: value}}) or JSONL records
        {"item_id": .., "features": {..}}. Returns the number of items read."""
        n = 0
        for item_id, feats in read_item_file(path):
            self.put(item_id, feats)
            n += 1
        return n


def read_item_file(path: str | Path) -> Iterable[tuple[int, dict[str, Any]]]:
    p = Path(path)
    data = p.read_bytes()
    stripped = data.lstrip()
    if stripped.startswith(b"{") and not p.suffix == ".jsonl":
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and "item_id" not in obj:
            for key, feats in obj.items():
                yield _item(key, feats, p)
            return
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise CatalogError(f"{p}:{lineno}: not valid JSON: {e}") from None
        if not isinstance(rec, dict) or "item_id" not in rec:
            raise CatalogError(f"{p}:{lineno}: expected {{\"item_id\", \"features\"}}")
        yield _item(rec["item_id"], rec.get("features") or {}, p, lineno)


def _item(key: Any, feats: Any, p: Path, lineno: int | None = None) -> tuple[int, dict]:
    where = f"{p}:{lineno}" if lineno else str(p)
    try:
        item_id = int(key)
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: item id {key!r} is not an integer") from None
    if not isinstance(feats, dict):
        raise CatalogError(f"{where}: features of item {item_id} must be an object")
    return item_id, feats


def load_item_source(cfg: ProfileConfig) -> ItemSource | None:
    if cfg.item_source is None:
        return None
    module_name, cls_name = cfg.item_source.class_path.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    source = cls(**cfg.item_source.options)
    if not callable(getattr(source, "fetch_item_features", None)):
        raise CatalogError(f"item_source {cfg.item_source.class_path} has no "
                           "fetch_item_features(item_id)")
    return source
