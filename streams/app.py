"""The Faust application: settings from config, RocksDB store, JSON/raw serializers, /health."""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

import faust

from features.config import ProfileConfig
from streams.faust_compat import table_recovery
from streams.faust_compat.aiokafka_calls import install_rebootstrap
from streams.faust_compat.consumer import ConsumerHooks, install
from streams.web.auth import auth_middleware

CHANGELOG_BATCH_BYTES = 512 * 1024     # Faust's max request (1 MB) holds two


@dataclass(frozen=True)
class Instance:
    """One worker replica: its own data dir and web port."""
    instance_id: int
    data_dir: Path
    web_host: str
    web_port: int


def instance_for(cfg: ProfileConfig, instance_id: int = 1, web_port: int | None = None) -> Instance:
    if instance_id < 1:
        raise ValueError("instance ids start at 1")
    return Instance(instance_id, cfg.data_dir / f"instance-{instance_id}", cfg.worker.web_host,
                    web_port if web_port is not None else cfg.worker.web_port + instance_id - 1)


def use_event_loop() -> None:
    """uvloop unless PROFILES_EVENT_LOOP=asyncio. Set before the app exists: Faust binds its
    loop (app.loop) the first time anything asks for it, which building the app does."""
    if os.environ.get("PROFILES_EVENT_LOOP", "uvloop") == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def create_app(cfg: ProfileConfig, inst: Instance) -> faust.App:
    """The Faust app of a worker (our consumer installed)."""
    use_event_loop()
    client = cfg.kafka.client
    inst.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        cfg.worker.app_id,
        broker=f"kafka://{cfg.kafka.bootstrap_servers}",
        store="rocksdb://",
        datadir=str(inst.data_dir),
        # Never pickle: keys are raw bytes, values JSON.
        key_serializer="raw",
        value_serializer="json",
        web_enabled=True,
        web_bind=inst.web_host,
        web_host=cfg.worker.advertised_host or inst.web_host,
        web_port=inst.web_port,
        web_application_options={"middlewares": [auth_middleware(cfg)]},
        topic_partitions=cfg.kafka.partitions,
        topic_replication_factor=cfg.kafka.replication,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=client.session_timeout_seconds,
        broker_heartbeat_interval=client.heartbeat_interval_seconds,
        # The table changelog: a commit writes each dirty user's state at once, so batch them
        # into few large produce requests (Faust's default, 16 KiB batches sent at once, made a
        # socket write per few records: 10% of the worker's GIL time on the sparse sample).
        producer_linger=client.linger_ms / 1000,
        producer_max_batch_size=CHANGELOG_BATCH_BYTES,
        producer_acks=-1 if client.acks == "all" else client.acks,
        # local state ahead of its changelog is dropped and rebuilt (faust_compat.table_recovery)
        TableManager=table_recovery.HealingTableManager,
        # off by default: a new owner rebuilds from the changelog (worker.standby_replicas)
        table_standby_replicas=cfg.worker.standby_replicas,
        **_credentials(cfg),
    )
    hooks = ConsumerHooks(client.fetch_max_wait_ms)
    install_rebootstrap()
    install(app, hooks)
    _add_health(app, cfg, inst, hooks)
    return app


def _credentials(cfg: ProfileConfig) -> dict:
    from streams.io.kafka_security import faust_credentials
    creds = faust_credentials(cfg)
    return {"broker_credentials": creds} if creds is not None else {}


def _add_health(app: faust.App, cfg: ProfileConfig, inst: Instance, hooks: ConsumerHooks) -> None:
    started_at = time.time()        # tells a restarted process from the one before

    @app.page("/health")
    async def health(web, request):
        recovery = app.tables.recovery
        # the scheduled runs' test of readiness (streams.faust_compat.group.FaustGroup.ready):
        # recovery done, and none begun since
        recovering = not recovery.completed.is_set() or recovery.in_recovery
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.assignor.assigned_actives())
        body = {
            "status": "recovering" if recovering else "ok",
            "app": app.conf.id,
            "instance": inst.instance_id,
            "recovery_completed": recovery.completed.is_set(),
            # changelog partitions this worker is reading into its tables (none when ok)
            "recovering_partitions": sorted(tp.partition for tp in recovery.active_tps)
            if recovering else [],
            "assigned_partitions": assigned,
            "started_at": started_at,
            # the group's generation and this worker's rebalance count: a reader that needs
            # one consistent assignment (tools/chaos/run.py) checks them before and after
            "generation": app.consumer_generation_id,
            "rebalancing": bool(app.rebalancing),
            "rebalances": app.rebalancing_count,
            # seconds since the group coordinator last accepted this worker (a heartbeat's
            # send time, or an assignment): past half the session timeout it fences itself
            "membership_confirmed_ago": round(
                time.monotonic() - hooks.membership.confirmed_at(), 3),
        }
        return web.json(body, status=200 if not recovering else 503)
