"""A cluster of `profiles deploy` as the CLI drives it from outside: its supervisor
(deploy/supervisor.py) started in the background and waited on until every worker is healthy, a
rolling restart handed to it, and stopping it. They talk through files in the run dir."""
from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Callable

from deploy.supervisor import Supervisor, read_cluster, request_file, setup_logging, supervisor_pid
from deploy.worker_process import spawn
from deploy.workers import ready
from features.config import ProfileConfig


class SupervisedError(RuntimeError):
    pass


def instance_ids(instances: int, instance_id: int | None) -> list[int]:
    """`--instance-id N` alone (the seed's one instance per host), else 1..instances."""
    return [instance_id] if instance_id else list(range(1, instances + 1))


def supervisor_argv(config_path: str | None, instances: int, instance_id: int | None,
                    monitor: bool) -> list[str]:
    """`-m deploy [--config C] deploy --foreground [--monitor] (--instance-id N | --instances
    N)`: the supervisor process."""
    argv = ["-m", "deploy"] + (["--config", config_path] if config_path else [])
    argv += ["deploy", "--foreground"] + (["--monitor"] if monitor else [])
    return argv + (["--instance-id", str(instance_id)] if instance_id else
                   ["--instances", str(instances)])


def _none_running(cfg: ProfileConfig) -> None:
    if supervisor_pid(cfg):
        raise SupervisedError(f"a cluster is already running (supervisor pid "
                              f"{supervisor_pid(cfg)}); `profiles stop` first")


def run_foreground(cfg: ProfileConfig, config_path: str | None, instances: int,
                   instance_id: int | None, monitor: bool) -> None:
    """Be the supervisor, in this process, until SIGTERM or Ctrl-C."""
    _none_running(cfg)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(cfg)
    Supervisor(cfg, config_path, instance_ids(instances, instance_id), monitor).run()


def start(cfg: ProfileConfig, config_path: str | None, instances: int, instance_id: int | None,
          monitor: bool, timeout: float, say: Callable[[str], None]) -> None:
    """Start the supervisor in the background; return once every worker answers healthy.
    SupervisedError when one is running already, when it exits, when a worker keeps exiting or
    is not healthy in `timeout` seconds."""
    _none_running(cfg)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    proc = spawn(supervisor_argv(config_path, instances, instance_id, monitor),
                 cfg.run_dir / "supervisor.out")
    say(f"supervisor started (pid {proc.pid}); logs in {cfg.run_dir}")
    deadline = time.monotonic() + timeout
    pending = {i: f"http://{cfg.worker.web_host}:{cfg.worker.web_port + i - 1}"
               for i in instance_ids(instances, instance_id)}
    while pending and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SupervisedError(f"the supervisor exited ({proc.returncode}); see "
                                  f"{cfg.run_dir / 'supervisor.log'}")
        for w in (read_cluster(cfg) or {}).get("workers", []):
            if w["instance_id"] in pending and (w["gave_up"] or (not monitor and
                                                                 not w["alive"])):
                log = cfg.run_dir / f"worker-{w['instance_id']}.log"
                raise SupervisedError(f"worker {w['instance_id']} keeps exiting: "
                                      f"{last_error(log)} (see {log}; the cluster is "
                                      f"still up: `profiles stop`)")
        for i, url in list(pending.items()):
            h = ready(url)
            if h:
                say(f"worker {i} healthy: {url}  partitions "
                    f"{len(h.get('assigned_partitions', []))}")
                del pending[i]
        time.sleep(0.5)
    if pending:
        raise SupervisedError(f"workers {sorted(pending)} not healthy in {timeout:.0f} s; "
                              f"see {cfg.run_dir}/worker-N.log")


def last_error(log: Path) -> str:
    """The last error line of a worker's log (its last 300 characters)."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "[ERROR]" in ln or "Error" in ln]
    return errors[-1].strip()[-300:] if errors else "no error in its log"


def request_restart(cfg: ProfileConfig, instance_id: int | None,
                    timeout: float) -> tuple[list[str], list[str]]:
    """Ask the supervisor for a rolling restart (of one worker, or all); wait for its result:
    (workers restarted, failures). SupervisedError when it takes longer than `timeout`."""
    rid = uuid.uuid4().hex
    result = cfg.run_dir / "supervisor-result.json"
    result.unlink(missing_ok=True)
    request_file(cfg).write_text(json.dumps({"action": "restart", "instance_id": instance_id,
                                             "id": rid}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            res = json.loads(result.read_text())
            if res.get("id") == rid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    else:
        raise SupervisedError(f"restart not finished in {timeout:.0f} s")
    return ([f"worker {i} restarted and healthy" for i in res["restarted"]],
            [f"worker {f['instance']}: {f['error']}" for f in res["failed"]])


def stop(cfg: ProfileConfig, timeout: float) -> bool:
    """SIGTERM to the supervisor (it stops the workers, then the broker); wait until it has
    gone. False when none runs; SupervisedError when it still runs after `timeout` seconds."""
    pid = supervisor_pid(cfg)
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while supervisor_pid(cfg) and time.monotonic() < deadline:
        time.sleep(0.3)
    if supervisor_pid(cfg):
        raise SupervisedError(f"supervisor {pid} still running after {timeout:.0f} s")
    return True
