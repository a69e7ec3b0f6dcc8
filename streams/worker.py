"""Run one worker replica in the foreground.

The same concept as deploy/cli/worker.py, its command layer.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import faust
from aiokafka.errors import KafkaError

from features.config import ProfileConfig
from streams.app import Instance, create_app
from streams.context import WorkerContext
from streams.io.topics import TopicMismatch, broker_unavailable, ensure_topics
from streams.process.gc_policy import apply_thresholds
from streams.web.restart import START_DEADLINE_ENV, exec_again_if_requested, request_exec_again

log = logging.getLogger(__name__)
BROKER_WAIT_SECONDS = 300.0     # how long a starting worker waits for the broker to answer
RETRY_EVERY_SECONDS = 2.0


def start_deadline(wait: float = BROKER_WAIT_SECONDS) -> float:
    """The deadline of this run of starts: set by the first attempt, read by the ones after."""
    held = os.environ.get(START_DEADLINE_ENV)
    if held:
        try:
            return float(held)
        except ValueError:
            pass
    deadline = time.time() + wait
    os.environ[START_DEADLINE_ENV] = repr(deadline)
    return deadline


def build_worker(cfg: ProfileConfig, inst: Instance) -> WorkerContext:
    """The production worker: the app skeleton, the profile pipeline, the scheduled runs,
    monitoring, and their HTTP routes."""
    from streams.faust_compat.consumer import consumer_hooks
    from streams.jobs import ScheduledJobs
    from streams.monitoring.monitor import WorkerMonitor
    from streams.pipeline import ProfilePipeline
    from streams.process.self_heal import SelfHeal
    from streams.web.api import add_routes
    from streams.web.cluster import add_cluster_routes
    from streams.web.job_routes import add_job_routes
    from streams.web.monitor_routes import add_monitor_routes
    from streams.web.restart import add_restart_route
    app = create_app(cfg, inst)
    pipeline = ProfilePipeline(app, cfg, inst.instance_id)
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


def ensure_topics_waiting(cfg: ProfileConfig, deadline: float,
                          retry_every: float = RETRY_EVERY_SECONDS) -> None:
    """Create missing topics, waiting while the broker does not answer: a worker (re)started
    during a broker outage (the chaos run pauses, kills and restarts the broker, and cuts its
    connections) waits for it instead of exiting."""
    while True:
        try:
            asyncio.run(ensure_topics(cfg))
            return
        except KafkaError as e:
            if broker_unavailable(e) is None:
                raise
            wait_or_give_up(cfg, e, deadline, retry_every)


def wait_or_give_up(cfg: ProfileConfig, error: BaseException, deadline: float,
                    retry_every: float) -> None:
    """Sleep before the next attempt, or exit with one sentence once the deadline has passed."""
    if time.time() > deadline:
        raise SystemExit(f"cannot start: no broker answered at {cfg.kafka.bootstrap_servers} "
                         f"for {BROKER_WAIT_SECONDS:.0f} s ({error!r})") from None
    log.warning("no answer from the broker at %s (%r); trying again in %.0f s",
                cfg.kafka.bootstrap_servers, error, retry_every)
    time.sleep(retry_every)


def start_again_after(stopped: SystemExit, cfg: ProfileConfig, deadline: float,
                      retry_every: float = RETRY_EVERY_SECONDS) -> bool:
    """Whether a worker that stopped with `stopped` starts again in place: Faust's start gives
    up on its first failed connection (a producer's bootstrap during a connection cut or a
    broker restart), so the worker waits a little and starts again, until the deadline."""
    error = broker_unavailable(stopped.__context__) if stopped.code else None
    if error is None:
        return False
    wait_or_give_up(cfg, error, deadline, retry_every)
    return True


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
    apply_thresholds(cfg.performance.gc)
    deadline = start_deadline()
    try:
        ensure_topics_waiting(cfg, deadline)
    except TopicMismatch as e:
        raise SystemExit(f"cannot start: {e}") from None
    extra: dict[str, Any] = {"logging_config": logging_config(cfg, log_file)} if log_file else {}
    worker = faust.Worker(app, loglevel=cfg.worker.log_level, **extra)
    # Faust's terminal spinner sets the root logger to DEBUG (so it can spin on every record)
    # whenever the level is WARN or above: every debug call in Faust and aiokafka then builds a
    # record. Workers log to files; no spinner.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as stopped:
        if start_again_after(stopped, cfg, deadline):
            request_exec_again()
        raise
    finally:
        exec_again_if_requested()
