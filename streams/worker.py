"""Run one worker replica in the foreground."""
from __future__ import annotations

import asyncio
import gc
import logging
import os

import faust

from features.config import ProfileConfig
from streams.app import Instance, create_app
from streams.topics import TopicMismatch, ensure_topics


GC_THRESHOLDS = (50_000, 50, 100)


def build_app(cfg: ProfileConfig, inst: Instance) -> faust.App:
    """The production app: the skeleton plus the profile pipeline and its HTTP reads."""
    from streams.api import add_routes
    from streams.job_routes import add_job_routes
    from streams.jobs import ScheduledJobs
    from streams.pipeline import ProfilePipeline
    app = create_app(cfg, inst)
    app.pipeline = ProfilePipeline(app)
    app.jobs = ScheduledJobs(app.pipeline)
    add_routes(app.pipeline)
    add_job_routes(app, app.jobs)
    return app


def run_worker(app: faust.App) -> None:
    """Create missing topics, then run the Faust worker until SIGTERM/SIGINT."""
    cfg = app.profile_config
    logging.basicConfig(level=logging.INFO)
    try:
        asyncio.run(ensure_topics(cfg))
    except TopicMismatch as e:
        raise SystemExit(f"cannot start: {e}") from None
    if os.environ.get("PROFILES_EVENT_LOOP", "uvloop") == "uvloop":
        # Faust spends most of its per-event time in the event loop (BROKER.md)
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # Decoding states allocates many small containers; with Faust's large heap the default
    # thresholds run full collections often enough to triple the cost of a state read. Our
    # objects form no reference cycles to speak of, so collect far less often.
    gc.set_threshold(*GC_THRESHOLDS)
    worker = faust.Worker(app, loglevel=cfg.worker.log_level)
    # Faust's terminal spinner sets the root logger to DEBUG (so it can spin on every record)
    # whenever the level is WARN or above: every debug call in Faust and aiokafka then builds a
    # record. Workers log to files; no spinner.
    worker.spinner = None
    worker.execute_from_commandline()
