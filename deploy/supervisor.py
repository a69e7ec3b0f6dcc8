"""`profiles deploy`: a supervisor process that owns a local cluster (the embedded broker when the
config points at it, and N workers), restarts crashed workers when monitoring (the seed's
自动恢复), performs rolling restarts on request, and raises the `workers_down` alert.

Files in the run dir: `supervisor.pid`, `cluster.json` (instances, ports, pids, restarts),
`supervisor-request.json` (a restart asked by `profiles restart`), `supervisor.log`, and per
worker `worker-N.pid`, `worker-N.log` (rotated by the worker) and `worker-N.out` (anything
printed before logging starts).
"""
from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from deploy import broker as embedded
from deploy.worker_process import WorkerProcess, worker_argv
from deploy.workers import pid_alive, pid_file, serving
from features.alerts import AlertEvaluator
from features.config import ProfileConfig

log = logging.getLogger("supervisor")
CRASH_WINDOW = 60.0         # seconds
MAX_CRASHES = 5             # restarts within CRASH_WINDOW before giving up on a worker


def cluster_file(cfg: ProfileConfig) -> Path:
    return cfg.run_dir / "cluster.json"


def request_file(cfg: ProfileConfig) -> Path:
    return cfg.run_dir / "supervisor-request.json"


def supervisor_pid(cfg: ProfileConfig) -> int | None:
    """The running supervisor's pid, or None."""
    try:
        pid = int((cfg.run_dir / "supervisor.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def read_cluster(cfg: ProfileConfig) -> dict | None:
    try:
        return json.loads(cluster_file(cfg).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Managed:
    process: WorkerProcess
    restarts: int = 0
    crashes: list[float] = field(default_factory=list)
    gave_up: bool = False
    restarting: bool = False

    @property
    def instance_id(self) -> int:
        return self.process.instance_id or 0

    def alive(self) -> bool:
        return self.process.alive()


class Supervisor:
    def __init__(self, cfg: ProfileConfig, config_path: str | None, instances: list[int],
                 monitor: bool):
        self.cfg, self.config_path, self.monitor = cfg, config_path, monitor
        self.workers = {i: Managed(self._process(i)) for i in instances}
        self.started_broker = False
        self.stopping = False
        self.alerts = AlertEvaluator([r for r in cfg.monitoring.alerts
                                      if r.metric == "workers_down"], "supervisor")

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> None:
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / "supervisor.pid").write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        try:
            self._start_broker()
            for w in self.workers.values():
                self._spawn(w)
            self._write_state()
            while not self.stopping:
                self._tick()
                time.sleep(1.0)
        finally:
            self._shutdown()

    def _on_term(self, *_):
        self.stopping = True

    def _start_broker(self) -> None:
        from streams.io.topics import ensure_topics
        cfg = self.cfg
        if cfg.uses_embedded_broker:
            st, self.started_broker = embedded.start(cfg.run_dir, cfg.embedded_broker.port,
                                                     cfg.embedded_broker.start_timeout_seconds)
            log.info(st.describe("started" if self.started_broker else "already running"))
        asyncio.run(ensure_topics(cfg))

    def _process(self, instance_id: int) -> WorkerProcess:
        """Worker N: its own rotated log (worker-N.log), anything printed before logging
        starts in worker-N.out."""
        run_dir = self.cfg.run_dir
        return WorkerProcess(
            worker_argv(self.config_path, instance_id,
                        log_file=run_dir / f"worker-{instance_id}.log"),
            run_dir / f"worker-{instance_id}.out", self.cfg.worker.web_port + instance_id - 1,
            instance_id=instance_id, pid_file=pid_file(self.cfg, instance_id))

    def _spawn(self, w: Managed) -> None:
        w.process.start()
        log.info("worker %s started (pid %s)", w.instance_id, w.process.pid)

    def _stop_worker(self, w: Managed) -> None:
        w.process.stop(grace=20.0)

    def _shutdown(self) -> None:
        for w in self.workers.values():
            self._stop_worker(w)
            log.info("worker %s stopped", w.instance_id)
        if self.started_broker:
            embedded.stop(self.cfg.run_dir)
            log.info("embedded broker stopped")
        for f in ("supervisor.pid", "cluster.json", "supervisor-request.json"):
            (self.cfg.run_dir / f).unlink(missing_ok=True)

    # ------------------------------------------------------------------ the loop

    def _tick(self) -> None:
        now = time.time()
        for w in self.workers.values():
            if w.alive() or w.restarting or w.gave_up:
                continue
            code = w.process.returncode
            log.warning("worker %s exited (code %s)", w.instance_id, code)
            if not self.monitor:
                continue
            w.crashes = [t for t in w.crashes if now - t < CRASH_WINDOW] + [now]
            if len(w.crashes) > MAX_CRASHES:
                w.gave_up = True
                log.error("worker %s crashed %d times in %.0f s; not restarting it (see "
                          "worker-%s.log)", w.instance_id, len(w.crashes), CRASH_WINDOW,
                          w.instance_id)
                continue
            w.restarts += 1
            self._spawn(w)
        self._handle_request()
        down = sum(1 for w in self.workers.values() if not self._serving(w))
        for rec in self.alerts.evaluate({"workers_down": float(down)}, now):
            self._send_alert(rec)
        self._write_state()

    def _handle_request(self) -> None:
        path = request_file(self.cfg)
        try:
            req = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        path.unlink(missing_ok=True)
        if req.get("action") != "restart":
            return
        ids = [req["instance_id"]] if req.get("instance_id") else sorted(self.workers)
        result = {"id": req.get("id"), "restarted": [], "failed": []}
        for i in ids:                       # rolling: one worker at a time
            w = self.workers.get(i)
            if w is None:
                result["failed"].append({"instance": i, "error": "no such instance"})
                continue
            w.restarting = True
            try:
                self._stop_worker(w)
                self._spawn(w)
                w.restarts += 1
                w.gave_up = False
                if w.process.wait_healthy(120, interval=0.5) is not None:
                    result["restarted"].append(i)
                else:
                    result["failed"].append({"instance": i, "error": "not healthy in 120 s"})
            finally:
                w.restarting = False
            self._write_state()
        (self.cfg.run_dir / "supervisor-result.json").write_text(json.dumps(result))

    @staticmethod
    def _serving(w: Managed) -> bool:
        """Alive and answering /health with ok (a restarted worker is down until then)."""
        return w.alive() and serving(w.process.url(), timeout=1) is not None

    def _write_state(self) -> None:
        state = {"supervisor_pid": os.getpid(), "monitor": self.monitor,
                 "broker": self.cfg.kafka.bootstrap_servers,
                 "embedded_broker": self.cfg.uses_embedded_broker,
                 "workers": [{"instance_id": w.instance_id, "web_port": w.process.web_port,
                              "pid": w.process.pid, "alive": w.alive(),
                              "restarts": w.restarts, "gave_up": w.gave_up}
                             for w in self.workers.values()],
                 "updated_at": time.time()}
        tmp = cluster_file(self.cfg).with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(cluster_file(self.cfg))

    def _send_alert(self, rec: dict) -> None:
        log.warning("alert %s %s: %s workers down", rec["alert"], rec["state"], rec["value"])
        try:
            asyncio.run(_produce_alert(self.cfg, rec))
        except Exception as e:              # the broker may be what is down
            log.warning("could not publish the alert: %s", e)


async def _produce_alert(cfg: ProfileConfig, rec: dict) -> None:
    from aiokafka import AIOKafkaProducer

    from streams.io.kafka_security import client_kwargs
    p = AIOKafkaProducer(bootstrap_servers=cfg.kafka.bootstrap_servers, **client_kwargs(cfg))
    await p.start()
    try:
        await p.send_and_wait(cfg.kafka.topics.alerts, orjson.dumps(rec),
                              key=rec["alert"].encode())
    finally:
        await p.stop()
    if cfg.monitoring.webhook_url:
        import aiohttp
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            await s.post(cfg.monitoring.webhook_url, json=rec)


def setup_logging(cfg: ProfileConfig) -> None:
    handler = logging.handlers.RotatingFileHandler(
        cfg.run_dir / "supervisor.log", maxBytes=cfg.worker.log_max_bytes,
        backupCount=cfg.worker.log_backups)
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
