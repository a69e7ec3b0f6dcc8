"""Delivering what Faust's producer holds: the table changelog's `send_soon` buffer.

Faust flushes the producer before committing, but its buffer flush gives up after 0.1 s without
progress, so under load a commit could cover state writes still waiting there, which a crash
then loses with no redelivery (docs/FAUST_INTERNALS.md#changelog-buffer). The buffer
(`producer.buffer`) is not part of Faust's public API.
"""
from __future__ import annotations

import faust


async def drain_changelog(app: faust.App) -> None:
    """Deliver every changelog record written so far (buffer drained, producer flushed)."""
    producer = app.producer
    while producer.buffer.size:
        if producer.state != "running":
            raise RuntimeError("producer stopped with state writes pending")
        await producer.buffer.flush()
    await producer.flush()
