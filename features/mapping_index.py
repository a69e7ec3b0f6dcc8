"""The append-only mapping index of FEATURES.md §5: name -> k, never renumbered.

File shape: {"format": 1, "106": ["entertainment", ...], "107": ["click_frequency", ...]}.
k is the 1-based position in a list; a name removed from config keeps its place.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from features.config import ProfileConfig

FORMAT = 1
INDEXED_FEATURES = ("106", "107")


class MappingIndexError(ValueError):
    pass


@dataclass
class MappingIndex:
    names: dict[str, list[str]]

    def k(self, feature: str, name: str) -> int:
        return self.names[feature].index(name) + 1

    def name(self, feature: str, k: int) -> str:
        return self.names[feature][k - 1]

    def ids(self, feature: str) -> dict[str, int]:
        return {n: i + 1 for i, n in enumerate(self.names[feature])}

    def extend(self, feature: str, wanted: list[str]) -> bool:
        known = self.names.setdefault(feature, [])
        new = [n for n in wanted if n not in known]
        known.extend(new)
        return bool(new)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **self.names}, indent=2, ensure_ascii=False)


def configured_names(cfg: ProfileConfig) -> dict[str, list[str]]:
    return {"106": list(cfg.interest_tags.categories),
            "107": [r.name for r in cfg.behavior_preferences.rules]}


def load(path: Path) -> MappingIndex:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MappingIndexError(f"{path}: cannot read the mapping index: {e}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise MappingIndexError(f"{path}: not a mapping index of format {FORMAT}")
    names = {}
    for f in INDEXED_FEATURES:
        lst = raw.get(f, [])
        if not isinstance(lst, list) or not all(isinstance(n, str) for n in lst) \
                or len(set(lst)) != len(lst):
            raise MappingIndexError(f"{path}: feature {f} must be a list of distinct names")
        names[f] = lst
    return MappingIndex(names)


def sync(cfg: ProfileConfig, path: Path | None = None) -> MappingIndex:
    """Load the index (creating it in config order when missing), append names the config
    added, and write it back atomically when anything changed. Workers starting together
    share the file: a change is made under an exclusive lock on a sibling `.lock` file, reading
    the index again there, so no process's names are lost."""
    path = path or cfg.mapping_index_path
    index, changed = _extended(cfg, path)
    if not changed:
        return index
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(path.suffix + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        index, changed = _extended(cfg, path)
        if changed:
            tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
            tmp.write_text(index.to_json(), encoding="utf-8")
            os.replace(tmp, path)
    return index


def _extended(cfg: ProfileConfig, path: Path) -> tuple[MappingIndex, bool]:
    index = load(path) if path.exists() else MappingIndex({f: [] for f in INDEXED_FEATURES})
    changed = not path.exists()
    for feature, wanted in configured_names(cfg).items():
        changed |= index.extend(feature, wanted)
    return index, changed
