"""The seed README's online API, against a running system:

    from streams import ProfileUpdatePipeline
    pipeline = ProfileUpdatePipeline("data/")
    pipeline.start()
    pipeline.add_user_event(user_id=123, item_id=12345, event_type="click",
                            additional_data={"dwell_time": 30})
    features = pipeline.get_user_features(123)
    pipeline.stop()

Events go to `user-events` (keyed by user); features come from a worker's query API, which routes
to the worker owning the user. `get_user_features` waits (up to `wait` seconds) until the events
this pipeline sent for the user have been applied.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaProducer

from features.config import ProfileConfig, load_config
from features.profile import ARRAY_KEYS
from streams.io.kafka_security import client_kwargs


class ProfileUpdatePipeline:
    def __init__(self, data_dir: str | Path = "data/",
                 config: str | Path | ProfileConfig | None = None, worker_url: str | None = None):
        self.data_dir = Path(data_dir)
        self.cfg = config if isinstance(config, ProfileConfig) else load_config(config)
        w = self.cfg.worker
        self.worker_url = (worker_url or f"http://{w.web_host}:{w.web_port}").rstrip("/")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: AIOKafkaProducer | None = None
        self._last_sent: dict[int, int] = {}

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="profile-pipeline")
        self._thread.start()

        async def _start():
            p = AIOKafkaProducer(bootstrap_servers=self.cfg.kafka.bootstrap_servers, acks="all",
                                 **client_kwargs(self.cfg))
            await p.start()
            return p
        self._producer = self._run(_start())

    def _run(self, coro, timeout: float = 30):
        if self._loop is None:
            raise RuntimeError("call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def add_user_event(self, user_id: int, item_id: int, event_type: str | int = "click",
                       additional_data: dict[str, Any] | None = None,
                       timestamp: int | None = None) -> None:
        """Send one event (acknowledged by the broker when this returns). `event_type` is a name
        from config `event_types` or an action_type code; `additional_data` may carry
        dwell_time, event_id or timestamp."""
        extra = dict(additional_data or {})
        ts = int(extra.pop("timestamp", timestamp or time.time()))
        ev: dict[str, Any] = {"user_id": user_id, "item_id": item_id, "timestamp": ts, **extra}
        if isinstance(event_type, int):
            ev["action_type"] = event_type
        else:
            ev["event_type"] = event_type
        producer = cast(AIOKafkaProducer, self._producer)      # set by start()
        self._run(producer.send_and_wait(self.cfg.kafka.topics.user_events,
                                         value=orjson.dumps(ev), key=str(user_id).encode()))
        self._last_sent[user_id] = max(ts, self._last_sent.get(user_id, 0))

    def get_profile(self, user_id: int, wait: float = 10.0) -> dict[str, Any] | None:
        """The user's current profile record, or None when the system has none."""
        want = self._last_sent.get(user_id)
        deadline = time.monotonic() + wait
        while True:
            rec = self._fetch(user_id)
            fresh = rec is not None and (want is None or (rec.get("as_of") or 0) >= want)
            if fresh or time.monotonic() >= deadline:
                return rec
            time.sleep(0.2)

    def get_user_features(self, user_id: int, wait: float = 10.0) -> dict[str, list[int]]:
        rec = self.get_profile(user_id, wait)
        if rec is None:
            return {k: [int(k) * 10 ** 7] for k in ARRAY_KEYS}
        return rec["features"]

    def _fetch(self, user_id: int) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{self.worker_url}/profiles/{user_id}", timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._producer is not None:
            self._run(self._producer.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        cast(threading.Thread, self._thread).join(10)        # started with the loop
        self._loop.close()
        self._loop = self._thread = self._producer = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
