"""The embedded broker's one error type."""
from __future__ import annotations


class BrokerError(RuntimeError):
    """A one-sentence operator-facing failure (busy port, no Java, no answer)."""
