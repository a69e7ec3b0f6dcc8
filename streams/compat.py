"""Broker compatibility profiles: every workaround for the embedded broker sits here.

`tansu` (BROKER.md):
- ListOffsets(latest) answers the base offset of the newest *batch* + 1, so Faust's table
  recovery, which reads changelog end offsets that way, stops early or raises ConsistencyError
  when a changelog partition ends in a multi-record batch. The workers read those end offsets
  from fetch responses instead (streams.faust_compat.consumer), so their producers batch
  normally. Plain aiokafka producers whose topics are read up to ListOffsets by others (the
  item catalog) still send one record per batch.
- Group joins wait about half the session timeout, so the session is short.
- Each produced batch is stored as one object, and every fetch lists all stored objects of each
  partition it reads (nothing is ever deleted: retention settings are not applied and
  DeleteRecords is not implemented), so a fetch costs more with every batch held. Our own event
  producers batch for 100 ms to hold fewer, larger batches (docs/BROKER.md, "Long runs").
- A fetch is not answered as soon as data arrives, and Faust's consumer waits 1,500 ms, so the
  workers' consumer waits 50 ms instead (measurements: docs/BROKER.md).
`kafka`: normal client defaults.
"""
from __future__ import annotations

from typing import Any

# aiokafka appends the first record to an empty batch whatever its size, so a limit below any
# record's size gives exactly one record per batch.
SINGLE_RECORD_BATCH_BYTES = 1


def faust_settings(compat: str) -> dict[str, Any]:
    if compat == "tansu":
        return {"broker_session_timeout": 10.0, "broker_heartbeat_interval": 1.0}
    return {}


def end_offsets_from_fetch(compat: str) -> bool:
    """Whether the workers' table recovery must read changelog end offsets from a fetch."""
    return compat == "tansu"


def consumer_fetch_max_wait_ms(compat: str) -> int | None:
    """The workers' fetch max wait, when it must differ from Faust's 1,500 ms."""
    return 50 if compat == "tansu" else None


def event_producer_settings(compat: str) -> dict[str, Any]:
    """For the CLI's own producers of events (`profiles produce`, the demo, the bench and chaos
    load generators)."""
    if compat == "tansu":
        return {"linger_ms": 100}
    return {}


def aiokafka_producer_settings(compat: str) -> dict[str, Any]:
    """For plain aiokafka producers whose topics' end offsets are read later."""
    if compat == "tansu":
        return {"max_batch_size": SINGLE_RECORD_BATCH_BYTES}
    return {}
