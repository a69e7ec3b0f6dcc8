"""What the pipeline declares on the Faust app: its topics and the `user-state` table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from features.config import ProfileConfig
from streams.faust_compat import table_recovery
from streams.faust_compat.tables import (
    PartitionedTable,
    StorePersistedOffsets,
    changelog_topic,
    guard_changelog,
    guard_persisted,
)
from streams.io.changelog_writer import ChangelogWriter
from streams.io.producer_settings import librdkafka_producer_settings
from streams.state import PartitionStore
from streams.state.table_keys import PARTITION_KEY, PartitionClock, not_older

STATE_TABLE = "user-state"


@dataclass(frozen=True)
class Topology:
    events: Any                 # faust topic of user-events (the agent's)
    updates: Any                # profile-updates, profile-aggregates, the DLQ: written by
    aggregates: Any             # streams.io.publisher, declared for Faust's topic list
    dlq: Any
    states: PartitionedTable    # states, due index, partition clocks (streams.state.table_keys)


def state_changelog_topic(cfg: ProfileConfig) -> str:
    """The state table's changelog topic, as Faust names it."""
    return f"{cfg.worker.app_id}-{STATE_TABLE}-changelog"


def _processed_offset(store: PartitionStore) -> int:
    return PartitionClock.unpack(store.get(PARTITION_KEY)).offset


def declare(app: faust.App, cfg: ProfileConfig, producer: Any = None) -> Topology:
    """`producer`: what the changelog writer sends through (exactly_once_v2: the worker's
    transactional producer; None: one of its own)."""
    t, n = cfg.kafka.topics, cfg.kafka.partitions
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
                           "value_serializer": "raw"}
    topics = [app.topic(name, partitions=n, **raw)
              for name in (t.user_events, t.profile_updates, t.profile_aggregates, t.dlq)]
    table = app.Table(STATE_TABLE, partitions=n, key_type=bytes, value_type=bytes,
                      options=cfg.performance.rocksdb.table_options())
    # a partition whose clock is past the end of its user-events partition is dropped and
    # rebuilt: its states would skip the events at offsets it says it applied
    table_recovery.check_source(app, table, t.user_events, _processed_offset)
    # a restore never takes a user's state back to fewer events (a frozen worker's late write)
    guard_changelog(table, not_older)
    # a restore starts after the last changelog record this store has everything up to
    guard_persisted(table)
    # the changelog records of our writes go out in bulk (streams.io.changelog_writer)
    writer = ChangelogWriter(changelog_topic(table),
                             {"bootstrap.servers": cfg.kafka.bootstrap_servers,
                              **librdkafka_producer_settings(cfg)},
                             StorePersistedOffsets(table), STATE_TABLE, producer)
    events, updates, aggregates, dlq = topics
    return Topology(events, updates, aggregates, dlq,
                    PartitionedTable(table, t.user_events, writer))
