"""When a changed profile is published: a strategy object named in config
(`real_time_update.strategy`, "module:Class"), the seed's CustomUpdateStrategy shape."""
from __future__ import annotations

import importlib
from typing import Any, Protocol


class UpdateStrategy(Protocol):
    def should_update(self, user_id: int, new_events: list[Any]) -> bool: ...

    def calculate_priority(self, user_id: int, events: list[Any]) -> float: ...


class PublishEveryChange:
    """The default: every change of the arrays is published at once."""

    def should_update(self, user_id: int, new_events: list[Any]) -> bool:
        return True

    def calculate_priority(self, user_id: int, events: list[Any]) -> float:
        return float(len(events))


def load_strategy(path: str) -> UpdateStrategy:
    module, name = path.split(":")
    obj = getattr(importlib.import_module(module), name)()
    for method in ("should_update", "calculate_priority"):
        if not callable(getattr(obj, method, None)):
            raise TypeError(f"update strategy {path} has no {method}()")
    return obj
