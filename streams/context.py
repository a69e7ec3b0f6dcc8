"""One worker's parts, built once (streams.worker.build_worker) and handed to what serves them.

Nothing is hung on the Faust app: each part gets what it needs when it is built, and the HTTP
routes take it from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import faust

    from features.config import ProfileConfig
    from streams.app import Instance
    from streams.jobs import ScheduledJobs
    from streams.monitoring.monitor import WorkerMonitor
    from streams.pipeline.profile_pipeline import ProfilePipeline


@dataclass(frozen=True)
class WorkerContext:
    app: faust.App
    config: ProfileConfig
    instance: Instance
    pipeline: ProfilePipeline
    jobs: ScheduledJobs
    monitor: WorkerMonitor
