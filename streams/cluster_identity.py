"""A worker notices when the Kafka cluster behind its broker address is another one: the broker
lost its data (log dirs wiped) or was replaced, so every topic, committed offset and changelog
the worker knew is gone. The cluster id changes then; the worker restarts itself in place
(streams.restart: the pid stays), and the start creates its topics again and drops the local
state that is ahead of the new, empty log (streams.faust_compat.table_recovery). No operator
step. The cluster id is read with a Metadata request every CHECK_EVERY seconds."""
from __future__ import annotations

import asyncio
import logging

import faust
from aiokafka.admin import AIOKafkaAdminClient

from features.config import ProfileConfig
from streams.kafka_security import client_kwargs
from streams.restart import restart_in_place

log = logging.getLogger(__name__)
CHECK_EVERY = 5.0
# a graceful stop commits to topics that are gone and waits out Faust's timeouts: nothing of the
# old cluster is worth that wait
STOP_BOUND = 5.0


async def cluster_id(cfg: ProfileConfig) -> str | None:
    """The id of the cluster at kafka.broker (None: no answer, or a broker too old to say)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers,
                                request_timeout_ms=5000, **client_kwargs(cfg))
    try:
        await admin.start()
        return (await admin.describe_cluster()).get("cluster_id")
    except Exception:           # an outage is for the consumer and producers to wait out
        return None
    finally:
        await admin.close()


class ClusterIdentityWatch:
    def __init__(self, app: faust.App, cfg: ProfileConfig):
        self.cfg = cfg
        self.first: str | None = None
        app.task(self._watch_forever)

    def changed(self, seen: str | None) -> bool:
        """Whether `seen` is another cluster than the first one this worker saw."""
        if seen is None:
            return False
        if self.first is None:
            self.first = seen
        return seen != self.first

    async def _watch_forever(self, app: faust.App) -> None:
        while not app.should_stop:
            seen = await cluster_id(self.cfg)
            if self.changed(seen):
                restart_in_place(f"the Kafka cluster at {self.cfg.kafka.bootstrap_servers} is "
                                 f"another one (cluster id {self.first} -> {seen}): its topics "
                                 "and offsets are gone", hard_after=STOP_BOUND)
                return
            await asyncio.sleep(CHECK_EVERY)
