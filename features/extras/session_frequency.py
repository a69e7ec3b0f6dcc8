"""Feature 111 (docs/EXTENDING.md's example): how often the user came back in the last 7 days,
as the number of `params["edges"]` their session count exceeds; nothing without a session."""
from __future__ import annotations

from typing import Any

from features.extensions import Engine, Metrics


def session_frequency(metrics: Metrics, engine: Engine, params: dict[str, Any]) -> list[int]:
    sessions = metrics[7]["sessions"]
    return [sum(sessions > e for e in params["edges"])] if sessions else []
