"""What the worker's pipeline (streams.pipeline.profile_pipeline.ProfilePipeline) shows to those
outside it: the scheduled runs (`JobPipeline`) and monitoring (`MonitoredPipeline`) each see a
narrow view of it, never its other attributes."""
from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from features.config import ProfileConfig
from features.profile import Profile
from features.runtime import FeatureRuntime
from streams.faust_compat.group import FaustGroup
from streams.faust_compat.tables import PartitionedTable
from streams.io.event_feed import EventFeed
from streams.io.publisher import Publisher
from streams.monitoring.counters import WorkerCounts
from streams.pipeline.publishing import PublishObserver
from streams.state.table_keys import PartitionClock


class PipelineBasics(Protocol):
    """The app, its config and feature runtime, the group, the state table and the partitions'
    clocks."""

    @property
    def app(self) -> Any: ...

    @property
    def cfg(self) -> ProfileConfig: ...

    @property
    def rt(self) -> FeatureRuntime: ...

    @property
    def tz(self) -> int: ...

    @property
    def group(self) -> FaustGroup: ...

    @property
    def states(self) -> PartitionedTable: ...

    def clock(self, partition: int) -> PartitionClock: ...


class JobPipeline(PipelineBasics, Protocol):
    """The scheduled runs: the pipeline lock and the outputs besides the basics."""

    @property
    def lock(self) -> AbstractAsyncContextManager[Any]:
        """Held while a run changes users: the stream's batches wait (and the open checkpoint
        is committed first)."""
        ...

    async def publish(self, profile: Profile, version: int, trigger: str) -> None: ...

    async def publish_aggregates(self, user_id: int, day: int,
                                 metrics: dict[int, Any]) -> None: ...

    async def flush_publishes(self) -> None: ...

    async def flush_writes(self) -> None: ...




class MonitoredPipeline(PipelineBasics, Protocol):
    """Monitoring: counts, the state table for the quality scan (under the read lock), the
    feed's and the publisher's hooks, the held users' figures, and the publisher for alerts."""

    @property
    def counts(self) -> WorkerCounts: ...

    @property
    def read_lock(self) -> AbstractAsyncContextManager[Any]: ...

    @property
    def feed(self) -> EventFeed: ...

    @property
    def alerts_publisher(self) -> Publisher: ...

    @property
    def on_publish(self) -> PublishObserver | None: ...

    @on_publish.setter
    def on_publish(self, observer: PublishObserver | None) -> None: ...

    def held_figures(self) -> dict[str, float]: ...
