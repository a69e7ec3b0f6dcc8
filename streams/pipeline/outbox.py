"""A micro-batch's outputs, held until the batch is known to be this worker's to emit
(streams.pipeline.lifecycle): records to publish, state writes, local-only writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from streams.state.table_keys import PartitionClock

if TYPE_CHECKING:
    from features.profile import Profile


@dataclass(frozen=True, slots=True)
class Record:
    """A record for the output producer (profile-updates, profile-aggregates, the DLQ)."""
    topic: str
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class StateWrite:
    """A write to the state table: the partition's RocksDB and its changelog."""
    partition: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class LocalWrite:
    """A write to one partition's local RocksDB only, no changelog (the due index)."""
    partition: int
    key: bytes
    value: bytes | None             # None: delete the key


@dataclass(frozen=True, slots=True)
class Publication:
    """A profile published, told to the observers (monitoring) once it is delivered."""
    profile: Profile
    trigger: str
    ingest_ts: float | None         # the Kafka timestamp of the event that caused it


@dataclass
class Outbox:
    records: list[Record] = field(default_factory=list)
    state_writes: list[StateWrite] = field(default_factory=list)
    local_writes: list[LocalWrite] = field(default_factory=list)
    # each partition's clock as the batch leaves it (written as a state and cached)
    clocks: dict[int, PartitionClock] = field(default_factory=dict)
    publications: list[Publication] = field(default_factory=list)
    # exactly_once_v2: the group metadata its offsets commit under, taken when it is emitted
    # (None: the consumer had left the generation its batches were computed in)
    group_metadata: bytes | None = None

    def local(self, partition: int) -> LocalWrites:
        """A RocksDB stand-in whose puts and deletes go into this outbox."""
        return LocalWrites(self, partition)


class LocalWrites:
    """put/delete of one partition's local RocksDB, queued into an outbox."""

    def __init__(self, outbox: Outbox, partition: int):
        self.outbox, self.partition = outbox, partition

    def put(self, key: bytes, value: bytes) -> None:
        self.outbox.local_writes.append(LocalWrite(self.partition, key, value))

    def delete(self, key: bytes) -> None:
        self.outbox.local_writes.append(LocalWrite(self.partition, key, None))
