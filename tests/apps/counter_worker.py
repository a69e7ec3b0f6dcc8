"""A minimal Faust app on our app skeleton: counts per key in a RocksDB table with a changelog.

Used to show that a table comes back exactly from its changelog (tests/integration/
test_changelog_recovery.py). The producer batches with a linger, so the last batch of every
changelog partition holds several records.
Run: python -m tests.apps.counter_worker CONFIG INSTANCE_ID WEB_PORT
"""
import sys

from features.config import load_config
from streams.app import create_app, instance_for
from streams.worker import run_worker

INPUT_TOPIC = "recovery-input"

cfg = load_config(sys.argv[1])
app = create_app(cfg, instance_for(cfg, int(sys.argv[2]), int(sys.argv[3])))
app.conf.producer_linger = 0.1

source = app.topic(INPUT_TOPIC, key_type=bytes, value_type=bytes,
                   partitions=cfg.kafka.partitions)
counts = app.Table("counts", default=int, key_type=str, value_type=int,
                   partitions=cfg.kafka.partitions)


@app.agent(source)
async def count(stream):
    async for key, value in stream.items():
        counts[key.decode()] += int(value)


@app.page("/counts")
async def show_counts(web, request):
    return web.json({k: v for k, v in counts.items()})


if __name__ == "__main__":
    sys.argv = sys.argv[:1]
    run_worker(app, cfg)
