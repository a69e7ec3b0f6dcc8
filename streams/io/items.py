"""The item catalog every worker reads: the compacted `item-features` topic, read in full by each
worker (no consumer group) before events are applied, then followed for changes."""
from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from features.catalog import ItemCatalog
from streams.faust_compat.aiokafka_calls import refresh_metadata

log = logging.getLogger(__name__)


class ItemFeed:
    def __init__(self, catalog: ItemCatalog, bootstrap: str, topic: str,
                 client_kwargs: dict | None = None):
        self.catalog = catalog
        self.bootstrap = bootstrap
        self.client_kwargs = client_kwargs or {}
        self.topic = topic
        self.ready = asyncio.Event()
        self.bad_records = 0

    def _put(self, key: bytes | None, value: bytes | None) -> None:
        try:
            rec = orjson.loads(value) if value is not None else None
            # int(None) (no key, no item_id) raises TypeError: the record is skipped below
            if isinstance(rec, dict) and "features" in rec:
                item_id, feats = int(rec.get("item_id", key)), rec["features"]  # type: ignore[arg-type]
            else:
                item_id, feats = int(key), rec      # type: ignore[arg-type]
            if not isinstance(feats, dict):
                raise ValueError("features must be an object")
            self.catalog.put(item_id, feats)
        except (ValueError, TypeError) as e:
            self.bad_records += 1
            log.warning("item-features record skipped (key %r): %s", key, e)

    async def run(self) -> None:
        """Read to the high watermark of every partition, set `ready`, then keep following."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    group_id=None, auto_offset_reset="earliest",
                                    **self.client_kwargs)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(self.topic)
            for _ in range(50):
                if parts:
                    break
                await asyncio.sleep(0.1)
                await refresh_metadata(consumer)
                parts = consumer.partitions_for_topic(self.topic)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts or ())]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5000)
                for records in batches.values():
                    for r in records:
                        self._put(r.key, r.value)
                if not self.ready.is_set() and await self._caught_up(consumer, tps):
                    log.info("item catalog loaded: %d items", len(self.catalog))
                    self.ready.set()
        finally:
            await consumer.stop()

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
        # the high watermark of the fetch responses: no extra request per check
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is None or await consumer.position(tp) < hw:
                return False
        return True
