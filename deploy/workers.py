"""Finding the local workers (pid files) and calling a worker's HTTP API."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from features.config import ProfileConfig
from streams.web.auth import HINT


class WorkerCallError(RuntimeError):
    """A worker call that failed: `status` is the HTTP status when the worker answered;
    `unreachable` when no connection was made (nothing was sent, so trying another way is
    safe even for a POST)."""

    def __init__(self, message: str, status: int | None = None, unreachable: bool = False,
                 body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.unreachable = unreachable
        self.body = body                # the worker's JSON answer, when it gave one

    @property
    def refused(self) -> bool:
        """The worker refused the token (or its absence)."""
        return self.status in (401, 403)


@dataclass(frozen=True)
class WorkerRef:
    instance_id: int | None
    url: str
    pid: int | None = None


def pid_alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def configured_url(cfg: ProfileConfig, instance_id: int = 1) -> str:
    """Where worker N listens by default (worker.web_host, worker.web_port + N - 1)."""
    host = cfg.worker.web_host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{host}:{cfg.worker.web_port + instance_id - 1}"


def pid_file(cfg: ProfileConfig, instance_id: int) -> Path:
    """Where a local worker started by up/demo/deploy keeps its pid."""
    return cfg.run_dir / f"worker-{instance_id}.pid"


def pid_files(cfg: ProfileConfig) -> list[tuple[int, Path]]:
    """(instance id, pid file) of every local worker's pid file in the run dir."""
    found = []
    for path in sorted(cfg.run_dir.glob("worker-*.pid")):
        try:
            found.append((int(path.stem.split("-")[1]), path))
        except (ValueError, IndexError):
            continue
    return found


def local_workers(cfg: ProfileConfig) -> list[WorkerRef]:
    """Workers with a live pid file in the run dir (started by up/demo/deploy)."""
    found = []
    for n, path in pid_files(cfg):
        try:
            pid = int(path.read_text())
        except (ValueError, OSError):
            continue
        if pid_alive(pid):
            found.append(WorkerRef(n, configured_url(cfg, n), pid))
    return found


def call(url: str, method: str = "GET", token: str | None = None,
         timeout: float = 30.0) -> dict:
    """JSON from a worker endpoint; WorkerCallError with the worker's own message on failure."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            sent = "the token" if token else "a call without a token"
            raise WorkerCallError(f"{url}: refused {sent} (HTTP {e.code}); {HINT}",
                                  e.code) from None
        try:
            body = json.loads(e.read() or b"{}")
        except ValueError:
            body = None
        msg = body.get("error", e.reason) if isinstance(body, dict) else e.reason
        raise WorkerCallError(f"{url}: {msg} (HTTP {e.code})", e.code,
                              body=body if isinstance(body, dict) else None) from None
    except urllib.error.URLError as e:      # raised while connecting and sending
        raise WorkerCallError(f"no worker answers at {url}: {e.reason}",
                              unreachable=True) from None
    except OSError as e:                    # while waiting for the answer
        raise WorkerCallError(f"no worker answers at {url}: {e}") from None


def serving(url: str, timeout: float = 2.0) -> dict | None:
    """The worker's /health body when its status is ok (not recovering), else None."""
    try:
        h = call(url.rstrip("/") + "/health", timeout=timeout)
    except (WorkerCallError, ValueError):
        return None
    return h if h.get("status") == "ok" else None


def ready(url: str, timeout: float = 2.0) -> dict | None:
    """The worker's /health body when it is ok with table recovery complete, else None."""
    h = serving(url, timeout)
    return h if h is not None and h.get("recovery_completed") else None
