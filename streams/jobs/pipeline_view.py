"""What the scheduled runs use of the worker's pipeline (streams.pipeline.profile_pipeline
.ProfilePipeline): its config and feature runtime, the state table, the pipeline lock, the
partitions' clocks and the outputs. Nothing else of the pipeline is theirs to reach."""
from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from features.config import ProfileConfig
from features.profile import Profile
from features.runtime import FeatureRuntime
from streams.faust_compat.group import FaustGroup
from streams.faust_compat.tables import PartitionedTable
from streams.state.table_keys import PartitionClock


class JobPipeline(Protocol):
    @property
    def cfg(self) -> ProfileConfig: ...

    @property
    def rt(self) -> FeatureRuntime: ...

    @property
    def tz(self) -> int: ...

    @property
    def states(self) -> PartitionedTable: ...

    @property
    def lock(self) -> AbstractAsyncContextManager[Any]:
        """Held while a run changes users: the stream's batches wait (and the open checkpoint
        is committed first)."""
        ...

    def clock(self, partition: int) -> PartitionClock: ...

    async def publish(self, profile: Profile, version: int, trigger: str) -> None: ...

    async def publish_aggregates(self, user_id: int, day: int,
                                 metrics: dict[int, Any]) -> None: ...

    async def flush_publishes(self) -> None: ...

    async def flush_writes(self) -> None: ...


class RunnerPipeline(JobPipeline, Protocol):
    """What the runner also needs: the app (its timers and web routes) and the group (which
    partitions are this worker's)."""

    @property
    def app(self) -> Any: ...

    @property
    def group(self) -> FaustGroup: ...
