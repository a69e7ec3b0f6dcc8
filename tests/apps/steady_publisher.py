"""A process that publishes through the workers' output client (streams.io.publisher, configured
as a worker's) 20 records every 2 ms to a topic of one partition for `seconds`, then flushes
and prints what happened as JSON. Each record's value holds the wall-clock time it was handed
over. At `freeze_at` seconds it stops itself (SIGSTOP) right after handing over a burst, so the
producer holds records when it freezes; tests/integration/test_publisher_thaw.py thaws it."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from features.config import load_config
from streams.io.publisher import DeliveryError, open_publisher
from streams.pipeline.outbox import Record


async def main(cfg_path: str, topic: str, seconds: float, freeze_at: float) -> dict:
    publisher = open_publisher(load_config(cfg_path))
    start = time.time()
    frozen = False
    sent = 0
    while time.time() < start + seconds:
        value = json.dumps({"t": time.time()}).encode()
        await publisher.send_many([Record(topic, b"k", value)] * 20)
        sent += 20
        if not frozen and time.time() >= start + freeze_at:
            frozen = True
            os.kill(os.getpid(), signal.SIGSTOP)
        await asyncio.sleep(0.002)
    error = None
    try:
        await publisher.flush()
    except DeliveryError as exc:
        error = str(exc)
    return {"sent": sent, "error": error}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]),
                                      float(sys.argv[4])))), flush=True)
