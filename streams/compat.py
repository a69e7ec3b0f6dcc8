"""Broker compatibility profiles: every workaround for the embedded broker sits here.

`tansu` (BROKER.md): ListOffsets(latest) answers the base offset of the newest *batch* + 1, so a
producer batching several records makes changelog end offsets too low and Faust's table recovery
stops early or raises ConsistencyError. One record per produce batch keeps end offsets exact.
Group joins wait about half the session timeout, so the session is short.
`kafka`: normal client defaults.
"""
from __future__ import annotations

from typing import Any

# aiokafka appends the first record to an empty batch whatever its size, so a limit below any
# record's size gives exactly one record per batch.
SINGLE_RECORD_BATCH_BYTES = 1


def faust_settings(compat: str) -> dict[str, Any]:
    if compat == "tansu":
        return {
            "producer_max_batch_size": SINGLE_RECORD_BATCH_BYTES,
            "broker_session_timeout": 10.0,
            "broker_heartbeat_interval": 1.0,
        }
    return {}


def aiokafka_producer_settings(compat: str) -> dict[str, Any]:
    """For plain aiokafka producers whose topics' end offsets are read later."""
    if compat == "tansu":
        return {"max_batch_size": SINGLE_RECORD_BATCH_BYTES}
    return {}
