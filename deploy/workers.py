"""Finding the local workers and talking to their HTTP API."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from features.config import ProfileConfig


class WorkerCallError(RuntimeError):
    pass


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


def local_workers(cfg: ProfileConfig) -> list[WorkerRef]:
    """Workers with a live pid file in the run dir (started by up/demo/deploy); when there is
    none, the configured address of instance 1 (a worker started by hand)."""
    found = []
    for pid_file in sorted(cfg.run_dir.glob("worker-*.pid")):
        try:
            n, pid = int(pid_file.stem.split("-")[1]), int(pid_file.read_text())
        except (ValueError, IndexError, OSError):
            continue
        if pid_alive(pid):
            found.append(WorkerRef(n, f"http://{cfg.worker.web_host}:"
                                      f"{cfg.worker.web_port + n - 1}", pid))
    return found or [WorkerRef(1, f"http://{cfg.worker.web_host}:{cfg.worker.web_port}")]


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
        try:
            msg = json.loads(e.read() or b"{}").get("error", e.reason)
        except ValueError:
            msg = e.reason
        raise WorkerCallError(f"{url}: {msg} (HTTP {e.code})") from None
    except OSError as e:
        raise WorkerCallError(f"no worker answers at {url}: {e}") from None


def ready(url: str, timeout: float = 2.0) -> dict | None:
    """The worker's /health body when it is ok with table recovery complete, else None."""
    try:
        h = call(url.rstrip("/") + "/health", timeout=timeout)
    except WorkerCallError:
        return None
    return h if h.get("status") == "ok" and h.get("recovery_completed") else None


def call_all(urls: list[str], method: str = "GET", token: str | None = None,
             timeout: float = 30.0) -> list[dict | WorkerCallError]:
    """The same call on every worker at once (each works on its own partitions)."""
    def one(u):
        try:
            return call(u, method, token, timeout)
        except WorkerCallError as e:
            return e
    with ThreadPoolExecutor(max(1, len(urls))) as pool:
        return list(pool.map(one, urls))
