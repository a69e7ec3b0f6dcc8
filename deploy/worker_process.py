"""A worker process started from this machine, the one way every caller starts one (the local
cluster, the supervisor, the chaos run, the benchmarks, the test harness): its argv, its
environment, its output appended to a file, its own session (a Ctrl-C in the terminal reaches
the caller, which stops it in order), stdin closed; start, signal, stop, and wait until its
`/health` answers as the caller needs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from deploy.workers import call, ready

Health = Callable[[str], "dict | None"]     # a worker's base URL -> its /health body when good


def worker_argv(config_path: str | Path | None = None, instance_id: int | None = None,
                web_port: int | None = None, log_file: str | Path | None = None) -> list[str]:
    """`-m deploy [--config C] worker [--instance-id N] [--web-port P] [--log-file F]`: what
    follows the interpreter to run `profiles worker`."""
    argv = ["-m", "deploy"]
    if config_path:
        argv += ["--config", str(config_path)]
    argv.append("worker")
    for option, value in (("--instance-id", instance_id), ("--web-port", web_port),
                          ("--log-file", log_file)):
        if value is not None:
            argv += [option, str(value)]
    return argv


def spawn(argv: list[str], out_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """`python ARGV` in a new session, stdin closed, stdout and stderr appended to out_path,
    `env` over this process's environment."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "ab") as out:
        return subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd,
                                env={**os.environ, **env} if env else None,
                                start_new_session=True)


@dataclass
class WorkerProcess:
    """One worker process: `argv` after the interpreter (worker_argv(), or another module
    serving /health), the port it serves on, and where its output goes."""
    argv: list[str]
    log_path: Path                  # stdout and stderr, appended
    web_port: int
    instance_id: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)    # over this process's environment
    cwd: Path | None = None
    pid_file: Path | None = None    # written at start, removed at stop (deploy.workers reads it)
    proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        self.proc = spawn(self.argv, self.log_path, self.env, self.cwd)
        if self.pid_file is not None:
            self.pid_file.write_text(str(self.proc.pid))
        return self

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path: str, timeout: float = 5.0) -> dict:
        """JSON from one of its endpoints (deploy.workers.WorkerCallError on failure)."""
        return call(self.url(path), timeout=timeout)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Send `sig` if it runs; after SIGKILL or SIGTERM, wait until it has gone."""
        if self.proc is not None and self.alive():
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(30)

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM, SIGKILL after `grace` seconds; the pid file goes."""
        if self.proc is not None and self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)

    def wait_healthy(self, timeout: float, healthy: Health = ready,
                     interval: float = 0.25) -> dict | None:
        """Its /health body once `healthy` accepts it (default: ok with table recovery
        complete); None when it exited first or `timeout` seconds passed (alive() tells)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return None
            body = healthy(self.url())
            if body is not None:
                return body
            time.sleep(interval)
        return None
