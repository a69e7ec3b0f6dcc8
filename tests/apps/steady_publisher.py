"""A process that publishes through the workers' output client (streams.publisher, configured
as a worker's) 20 records every 2 ms to a topic of one partition for `seconds`, then flushes
and prints what happened as JSON. Each record's value holds the wall-clock time it was handed
over. tests/integration/test_publisher_thaw.py freezes it with SIGSTOP."""
from __future__ import annotations

import asyncio
import json
import sys
import time

from features.config import load_config
from streams.pipeline.outbox import Record
from streams.publisher import DeliveryError, open_publisher


async def main(cfg_path: str, topic: str, seconds: float) -> dict:
    publisher = open_publisher(load_config(cfg_path))
    end = time.time() + seconds
    sent = 0
    while time.time() < end:
        value = json.dumps({"t": time.time()}).encode()
        await publisher.send_many([Record(topic, b"k", value)] * 20)
        sent += 20
        await asyncio.sleep(0.002)
    error = None
    try:
        await publisher.flush()
    except DeliveryError as exc:
        error = str(exc)
    return {"sent": sent, "error": error}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))),
          flush=True)
