"""Run one worker replica in the foreground."""
from __future__ import annotations

import asyncio
import logging
import time

import faust
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError

from features.config import ProfileConfig
from streams.app import Instance, create_app
from streams.context import WorkerContext
from streams.restart import exec_again_if_requested
from streams.topics import TopicMismatch, ensure_topics

log = logging.getLogger(__name__)
BROKER_WAIT_SECONDS = 300.0     # how long a starting worker waits for the broker to answer


def build_worker(cfg: ProfileConfig, inst: Instance) -> WorkerContext:
    """The production worker: the app skeleton, the profile pipeline, the scheduled runs,
    monitoring, and their HTTP routes."""
    from streams.api import add_routes
    from streams.cluster import add_cluster_routes
    from streams.faust_compat.consumer import consumer_hooks
    from streams.job_routes import add_job_routes
    from streams.jobs import ScheduledJobs
    from streams.monitor_routes import add_monitor_routes
    from streams.monitoring import WorkerMonitor
    from streams.pipeline import ProfilePipeline
    from streams.restart import add_restart_route
    from streams.self_heal import SelfHeal
    app = create_app(cfg, inst)
    pipeline = ProfilePipeline(app, cfg)
    jobs = ScheduledJobs(pipeline, inst.instance_id)
    monitor = WorkerMonitor(pipeline, jobs, inst.instance_id)
    worker = WorkerContext(app, cfg, inst, pipeline, jobs, monitor)
    add_routes(worker)
    add_job_routes(worker)
    add_monitor_routes(app, monitor)
    add_cluster_routes(app, cfg, inst.instance_id)
    add_restart_route(app, jobs, inst.instance_id)
    SelfHeal(app, cfg, consumer_hooks(app).membership.confirmed_at)
    return worker


def ensure_topics_waiting(cfg: ProfileConfig, wait: float = BROKER_WAIT_SECONDS,
                          retry_every: float = 2.0) -> None:
    """Create missing topics, waiting while the broker does not answer: a worker (re)started
    during a broker outage (the chaos run pauses the broker) waits for it instead of exiting."""
    deadline = time.monotonic() + wait
    while True:
        try:
            asyncio.run(ensure_topics(cfg))
            return
        except (KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError) as e:
            if time.monotonic() > deadline:
                raise SystemExit(f"cannot start: no broker answered at "
                                 f"{cfg.kafka.bootstrap_servers} for {wait:.0f} s ({e})") from None
            log.warning("no answer from the broker at %s (%s); trying again in %.0f s",
                        cfg.kafka.bootstrap_servers, e, retry_every)
            time.sleep(retry_every)


LEVELS = {"crit": "CRITICAL", "error": "ERROR", "warn": "WARNING", "info": "INFO",
          "debug": "DEBUG"}


def logging_config(cfg: ProfileConfig, log_file: str) -> dict:
    """Log to a size-rotated file instead of the terminal (workers a cluster starts)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] "
                                             "%(name)s: %(message)s"}},
        "handlers": {"file": {"class": "logging.handlers.RotatingFileHandler",
                              "filename": log_file, "maxBytes": cfg.worker.log_max_bytes,
                              "backupCount": cfg.worker.log_backups, "formatter": "default"}},
        "root": {"level": LEVELS[cfg.worker.log_level], "handlers": ["file"]},
    }


def run_worker(app: faust.App, cfg: ProfileConfig, log_file: str | None = None) -> None:
    """Create missing topics, then run the Faust worker until SIGTERM/SIGINT."""
    logging.basicConfig(level=logging.INFO)
    try:
        ensure_topics_waiting(cfg)
    except TopicMismatch as e:
        raise SystemExit(f"cannot start: {e}") from None
    extra = {"logging_config": logging_config(cfg, log_file)} if log_file else {}
    worker = faust.Worker(app, loglevel=cfg.worker.log_level, **extra)
    # Faust's terminal spinner sets the root logger to DEBUG (so it can spin on every record)
    # whenever the level is WARN or above: every debug call in Faust and aiokafka then builds a
    # record. Workers log to files; no spinner.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        exec_again_if_requested()
