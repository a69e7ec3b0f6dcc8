"""Everything compiled from config that applies and evaluates events: one place to build it for
the stream, the scheduled jobs, the batch path and the seed API."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from features import mapping_index
from features.catalog import CategoryMatcher, ItemCatalog, load_item_source
from features.config import ProfileConfig
from features.events import EventParser
from features.profile import FeatureEngine


@dataclass
class FeatureRuntime:
    cfg: ProfileConfig
    engine: FeatureEngine
    catalog: ItemCatalog
    parser: EventParser

    @classmethod
    def from_config(cls, cfg: ProfileConfig, items: str | Path | None = None) -> "FeatureRuntime":
        """Sync the mapping index, compile the features, and load an item file if given."""
        index = mapping_index.sync(cfg)
        catalog = ItemCatalog(CategoryMatcher(cfg, index), load_item_source(cfg))
        if items is not None:
            catalog.load_file(items)
        return cls(cfg, FeatureEngine(cfg, index), catalog, EventParser(cfg.events))
