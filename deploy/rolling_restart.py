"""`profiles restart` on any cluster (deploy.cluster): one member at a time is asked to restart in
place (`POST /restart`, streams/web/restart.py); the next one waits until it answers healthy as a
new process and the group owns every partition again. The worker the group was read from goes last
(the others may be reached through it). A cluster of `profiles deploy` is restarted by its
supervisor instead (deploy/supervisor.py)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from deploy.cluster import Cluster
from deploy.workers import WorkerCallError
from features.config import ProfileConfig
from streams.web.cluster import Member, Membership


@dataclass
class RestartResult:
    restarted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _back(cluster: Cluster, m: Member, started_at: float | None, timeout: float) -> str | None:
    """None once the member answers healthy as a new process in a group that owns every
    partition; else why not."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        time.sleep(1.0)
        try:
            h = cluster.call(m, "/health", timeout=2)
            if h.get("started_at") == started_at:
                last = "still the old process"
                continue
            if h.get("status") != "ok" or not h.get("recovery_completed"):
                last = f"status {h.get('status')}"
                continue
            view = Membership.from_dict(cluster.call(m, "/cluster", timeout=5))
            if view.rebalancing or view.unassigned():
                last = f"group not settled (unassigned partitions {view.unassigned()})"
                continue
            return None
        except WorkerCallError as e:
            last = str(e)
    return f"not healthy in {timeout:.0f} s ({last})"


def rolling_restart(cluster: Cluster, instance_id: int | None = None, timeout: float = 300,
                    say: Callable[[str], None] = print) -> RestartResult:
    result = RestartResult()
    replies = cluster.call_all("/health", timeout=5)
    chosen = [r for r in replies if instance_id is None or
              (r.body or {}).get("instance", r.member.instance_id) == instance_id]
    if not chosen:
        result.failed.append(f"no member of the group has instance id {instance_id}")
    chosen.sort(key=lambda r: r.member.url == cluster.view.self_url)
    for r in chosen:
        name = f"worker {(r.body or {}).get('instance', r.member.instance_id) or '?'}"
        where = f"({r.member.url})"
        if r.body is None:
            result.failed.append(f"{name} {where}: {r.error}")
            continue
        try:
            cluster.call(r.member, "/restart", "POST", timeout=10)
        except WorkerCallError as e:
            result.failed.append(f"{name} {where}: {e}")
            continue
        say(f"{name} {where} restarting")
        why = _back(cluster, r.member, r.body.get("started_at"), timeout)
        if why:
            result.failed.append(f"{name} {where}: {why}")
            break                       # the next one would leave the group short twice
        result.restarted.append(f"{name} restarted and healthy {where}")
        say(result.restarted[-1])
    return result


def restart(cfg: ProfileConfig, urls: tuple[str, ...], instance_id: int | None = None,
            timeout: float = 300, say: Callable[[str], None] = print) -> RestartResult:
    """`profiles restart`: a cluster of `profiles deploy` on this machine (and no --url given)
    by its supervisor, any other cluster one member at a time in place. NoWorkerAnswers when
    no worker gives the group; deploy.supervised.SupervisedError when the supervisor is late."""
    from deploy import supervised
    from deploy.supervisor import supervisor_pid
    if supervisor_pid(cfg) and not urls:
        restarted, failed = supervised.request_restart(cfg, instance_id, timeout)
        for line in restarted:
            say(line)
        return RestartResult(restarted, failed)
    from deploy.cluster import discover
    from streams.web.auth import client_token
    return rolling_restart(discover(cfg, urls, client_token(cfg)), instance_id, timeout, say)
