"""A local cluster on this machine: the embedded broker (when the config points at it), the
topics, and N worker processes with their logs and pid files under the run dir."""
from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from deploy import broker as embedded
from features.config import ProfileConfig


class ClusterError(RuntimeError):
    pass


@dataclass
class LocalWorker:
    instance_id: int
    web_port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def get(self, path: str, timeout: float = 5.0) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as r:
            return json.loads(r.read())


@dataclass
class LocalCluster:
    cfg: ProfileConfig
    config_path: str | None = None
    say: Callable[[str], None] = print
    workers: list[LocalWorker] = field(default_factory=list)
    started_broker: bool = False

    def start(self, instances: int = 1, timeout: float = 90.0) -> None:
        from streams.topics import ensure_topics
        cfg = self.cfg
        if cfg.uses_embedded_broker:
            st, self.started_broker = embedded.start(cfg.run_dir, cfg.embedded_broker.port,
                                                     cfg.embedded_broker.start_timeout_seconds)
            self.say(f"embedded broker on 127.0.0.1:{st.port} (pid {st.pid})")
            if self.started_broker:
                drop_stale_worker_state(cfg, self.say)
        created = asyncio.run(ensure_topics(cfg))
        self.say(f"topics ready ({len(created)} created)")
        for i in range(1, instances + 1):
            self.workers.append(self._spawn(i))
        for w in self.workers:
            if not self._wait_healthy(w, timeout):
                raise ClusterError(f"worker {w.instance_id} did not become healthy; "
                                   f"see {w.log_path}")
            self.say(f"worker {w.instance_id} healthy: {w.url}/health")

    def _spawn(self, instance_id: int) -> LocalWorker:
        cfg = self.cfg
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        log_path = cfg.run_dir / f"worker-{instance_id}.log"
        cmd = [sys.executable, "-m", "deploy"]
        if self.config_path:
            cmd += ["--config", self.config_path]
        cmd += ["worker", "--instance-id", str(instance_id)]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file(instance_id).write_text(str(proc.pid))
        self.say(f"worker {instance_id} starting (pid {proc.pid}); log {log_path}")
        return LocalWorker(instance_id, cfg.worker.web_port + instance_id - 1, proc, log_path)

    def pid_file(self, instance_id: int) -> Path:
        return self.cfg.run_dir / f"worker-{instance_id}.pid"

    @staticmethod
    def _wait_healthy(w: LocalWorker, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if w.proc.poll() is not None:
                return False
            try:
                if w.get("/health", timeout=1).get("status") == "ok":
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(0.25)
        return False

    def exited(self) -> LocalWorker | None:
        return next((w for w in self.workers if w.proc.poll() is not None), None)

    def stop(self) -> list[str]:
        """Stop every process this cluster started; returns what was done. Ignores Ctrl-C
        meanwhile, so a second one cannot leave a process behind."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        done = []
        try:
            for w in self.workers:
                _stop_process(w.proc)
                self.pid_file(w.instance_id).unlink(missing_ok=True)
                done.append(f"worker {w.instance_id} stopped")
            self.workers.clear()
            if self.started_broker:
                embedded.stop(self.cfg.run_dir)
                self.started_broker = False
                done.append("embedded broker stopped")
        finally:
            signal.signal(signal.SIGINT, previous)
        return done


def drop_stale_worker_state(cfg: ProfileConfig, say: Callable[[str], None]) -> None:
    """A new embedded broker starts empty (memory only), so local table state from an earlier
    run points at changelog offsets that no longer exist. The workers would drop it themselves
    (streams.faust_compat.table_recovery); clearing it first is quicker and says so. The mapping
    index and the backups beside it are kept: ids never change meaning."""
    stale = sorted(cfg.data_dir.glob("instance-*"))
    for d in stale:
        shutil.rmtree(d)
    if stale:
        say(f"new embedded broker: cleared worker state of an earlier run "
            f"({', '.join(d.name for d in stale)})")


def _stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
