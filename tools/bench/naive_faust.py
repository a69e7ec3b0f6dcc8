"""Baseline (B) of `profiles bench`: naive Faust, one table update per event, on our app skeleton
(same broker settings). Run: python -m tools.bench.naive_faust CONFIG WEB_PORT"""
import sys

import orjson

from features.config import load_config
from streams.app import create_app, instance_for
from streams.worker import run_worker

cfg = load_config(sys.argv[1])
app = create_app(cfg, instance_for(cfg, 1, int(sys.argv[2])))
events = app.topic(cfg.kafka.topics.user_events, key_type=bytes, value_type=bytes,
                   key_serializer="raw", value_serializer="raw",
                   partitions=cfg.kafka.partitions)
counts = app.Table("naive-counts", default=int, key_type=bytes, value_type=int,
                   partitions=cfg.kafka.partitions)
seen = {"events": 0}


@app.agent(events)
async def naive(stream):
    async for key, value in stream.items():
        seen["events"] += 1
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        counts[key or b"-"] += 1


@app.page("/stats")
async def stats(web, request):
    return web.json({"counts": {"events_in": seen["events"]}})


if __name__ == "__main__":
    sys.argv = sys.argv[:1]
    run_worker(app, cfg)
