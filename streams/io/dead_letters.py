"""Dead-letter records for `user-events-dlq` (FEATURES.md §6)."""
from __future__ import annotations

import base64
import hashlib
import time

import orjson

# A dead letter keeps the original bytes up to this size; a larger original is cut there and
# carries its full size and SHA-256, so the record stays well under the broker's message limit.
MAX_ORIGINAL_BYTES = 256 * 1024


def dead_letter(reason: str, message: str, original: bytes | None, key: bytes | None,
                topic: str, partition: int, offset: int) -> bytes:
    original = original or b""
    rec = {
        "reason": reason,
        "message": message,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "key": None if key is None else key.decode("utf-8", "backslashreplace"),
        "original_b64": base64.b64encode(original[:MAX_ORIGINAL_BYTES]).decode(),
        "original_size": len(original),
        "dead_lettered_at": time.time(),
    }
    if len(original) > MAX_ORIGINAL_BYTES:
        rec["original_truncated"] = True
        rec["original_sha256"] = hashlib.sha256(original).hexdigest()
    return orjson.dumps(rec)


def original_bytes(record: dict) -> bytes:
    return base64.b64decode(record["original_b64"])
