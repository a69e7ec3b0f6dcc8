"""A local cluster on this machine: the embedded broker (when the config points at it), the
topics, and N worker processes with their logs and pid files under the run dir."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from typing import Callable

from deploy import broker as embedded
from deploy.worker_process import WorkerProcess, worker_argv
from deploy.workers import pid_file, pid_files, serving
from features.config import ProfileConfig


class ClusterError(RuntimeError):
    pass


@dataclass
class LocalCluster:
    cfg: ProfileConfig
    config_path: str | None = None
    say: Callable[[str], None] = print
    workers: list[WorkerProcess] = field(default_factory=list)
    started_broker: bool = False

    def start(self, instances: int = 1, timeout: float = 90.0, fresh: bool = False) -> None:
        """`fresh`: when this starts the embedded broker, it starts on empty log dirs and the
        workers on empty local state (the demo: a replay checked against the batch path)."""
        from streams.io.topics import ensure_topics
        cfg = self.cfg
        if cfg.uses_embedded_broker:
            if fresh and not embedded.status(cfg.run_dir).running:
                clear_local_data(cfg, self.say)
            st, self.started_broker = embedded.start(cfg.run_dir, cfg.embedded_broker.port,
                                                     cfg.embedded_broker.start_timeout_seconds)
            self.say(st.describe("started" if self.started_broker else "already running"))
        created = asyncio.run(ensure_topics(cfg))
        self.say(f"topics ready ({len(created)} created)")
        for i in range(1, instances + 1):
            self.workers.append(self._spawn(i))
        for w in self.workers:
            if w.wait_healthy(timeout, serving) is None:
                raise ClusterError(f"worker {w.instance_id} did not become healthy; "
                                   f"see {w.log_path}")
            self.say(f"worker {w.instance_id} healthy: {w.url('/health')}")

    def _spawn(self, instance_id: int) -> WorkerProcess:
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        w = WorkerProcess(worker_argv(self.config_path, instance_id),
                          cfg.run_dir / f"worker-{instance_id}.log",
                          cfg.worker.web_port + instance_id - 1, instance_id=instance_id,
                          pid_file=pid_file(cfg, instance_id)).start()
        self.say(f"worker {instance_id} starting (pid {w.pid}); log {w.log_path}")
        return w

    def exited(self) -> WorkerProcess | None:
        return next((w for w in self.workers if not w.alive()), None)

    def run_until_stopped(self) -> None:
        """Until SIGTERM (or Ctrl-C, KeyboardInterrupt); ClusterError when a worker exits."""
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        while not stopping:
            gone = self.exited()
            if gone is not None:
                raise ClusterError(f"worker {gone.instance_id} exited with code "
                                   f"{gone.returncode}; see {gone.log_path}")
            time.sleep(0.5)

    def stop(self) -> list[str]:
        """Stop every process this cluster started; returns what was done. Ignores Ctrl-C
        meanwhile, so a second one cannot leave a process behind."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        done = []
        try:
            for w in self.workers:
                w.stop(grace=15.0)
                done.append(f"worker {w.instance_id} stopped")
            self.workers.clear()
            if self.started_broker:
                embedded.stop(self.cfg.run_dir)
                self.started_broker = False
                done.append("embedded broker stopped")
        finally:
            signal.signal(signal.SIGINT, previous)
        return done


def stop_local_workers(cfg: ProfileConfig) -> list[str]:
    """SIGTERM to every worker with a pid file in the run dir; returns what was done."""
    done = []
    for _, path in pid_files(cfg):
        try:
            pid = int(path.read_text())
            os.kill(pid, signal.SIGTERM)
            done.append(f"stopped worker pid {pid}")
        except (ValueError, ProcessLookupError, OSError):
            pass
        path.unlink(missing_ok=True)
    return done


def stop_local(cfg: ProfileConfig) -> list[str]:
    """`profiles down`: SIGTERM to every worker with a pid file in the run dir, then the
    embedded broker; returns what was done."""
    done = stop_local_workers(cfg)
    done.append("embedded broker stopped" if embedded.stop(cfg.run_dir)
                else "embedded broker: not running")
    return done


def clear_local_data(cfg: ProfileConfig, say: Callable[[str], None]) -> None:
    """Empty the stopped embedded broker's log dirs and every worker's local state, for a run
    that starts from nothing. The mapping index and the backups beside it are kept: ids never
    change meaning."""
    embedded.wipe(cfg.run_dir)
    stale = sorted(cfg.data_dir.glob("instance-*"))
    for d in stale:
        shutil.rmtree(d)
    say("a fresh start: the embedded broker's log dirs cleared"
        + (f", and the worker state of an earlier run ({', '.join(d.name for d in stale)})"
           if stale else ""))
