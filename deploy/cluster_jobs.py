"""`profiles job` and `profiles backup list` on every member of the group (deploy.cluster), and
`profiles backup restore` of a stopped local worker.

A job is run by each member on the partitions it owns; the run succeeds only when the reports
that came back cover every partition: a member that does not answer, refuses the token or fails,
and a partition nobody ran, are named, and the exit code is 1."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from deploy.cluster import Cluster, Reply
from features.config import ProfileConfig
from streams.state import backups


@dataclass
class JobOutcome:
    name: str
    partitions: int                                 # of user-events
    replies: list[Reply] = field(default_factory=list)

    def _ok(self) -> list[Reply]:
        return [r for r in self.replies if r.body is not None and not r.body.get("error")]

    def ran(self) -> set[int]:
        """Partitions a member reports it ran to the end."""
        return {p["partition"] for r in self._ok() for p in cast(dict, r.body)["partitions"]
                if not p.get("aborted")}

    def not_run(self) -> list[int]:
        ran = self.ran()
        return [p for p in range(self.partitions) if p not in ran]

    def failed(self) -> list[Reply]:
        return [r for r in self.replies if r not in self._ok()]

    def drift(self) -> int:
        return sum(cast(dict, r.body)["totals"].get("drift", {}).get("users", 0)
                   for r in self._ok())

    @property
    def exit_code(self) -> int:
        """0 done everywhere, 1 a member failed or a partition was not run, 2 weekly drift."""
        if self.failed() or self.not_run():
            return 1
        return 2 if self.drift() else 0

    def lines(self) -> list[tuple[str, bool]]:
        """(line, is_error) to print."""
        out: list[tuple[str, bool]] = []
        totals: dict[str, int] = {}
        for r in self.replies:
            if r.body is None:
                out.append((f"{r.member.url}: FAILED {r.error}", True))
                continue
            res, t = r.body, r.body["totals"]
            out.append((f"{r.member.url}: instance {res['instance']}, partitions "
                        f"{[p['partition'] for p in res['partitions']]}, {res['seconds']}s, "
                        + json.dumps(t, ensure_ascii=False), False))
            if res.get("backup"):
                out.append((f"  backup {res['backup']}", False))
            if res.get("error"):
                out.append((f"  error: {res['error']}", True))
            aborted = {p["partition"]: p["aborted"] for p in res["partitions"] if p.get("aborted")}
            if aborted:
                out.append((f"  stopped early: {aborted}", True))
            if not res.get("error"):
                for k, v in t.items():
                    if isinstance(v, int):
                        totals[k] = totals.get(k, 0) + v
        out.append((f"{self.name}: " + ", ".join(f"{k} {v:,}" for k, v in totals.items())
                    + (f", drift {self.drift():,} users" if self.name == "weekly" else ""),
                    False))
        missing = self.not_run()
        if missing:
            owners = {p: r.member.url for r in self.replies for p in r.member.partitions}
            detail = ", ".join(f"{p} ({owners.get(p, 'no owner')})" for p in missing)
            out.append((f"{self.name} NOT RUN on {len(missing)} of {self.partitions} "
                        f"partitions: {detail}; run it again once every worker answers", True))
        return out


def run_job(cluster: Cluster, name: str, full: bool = False,
            timeout: float = 3600) -> JobOutcome:
    """POST /jobs/NAME on every member at once."""
    path = f"/jobs/{name}" + ("?full=1" if full else "")
    return JobOutcome(name, cluster.view.partitions, cluster.call_all(path, "POST", timeout))


def backup_lines(cluster: Cluster, instance_id: int | None = None
                 ) -> tuple[list[str], list[Reply]]:
    """Every member's backups, oldest first per member; and the members that failed."""
    lines: list[str] = []
    failed = []
    for r in cluster.call_all("/backups", timeout=30):
        if r.body is None:
            failed.append(r)
            continue
        if instance_id is not None and r.body["instance"] != instance_id:
            continue
        for b in r.body["backups"]:
            lines.append(f"instance {b['instance']}  {r.member.url}  {b['name']}  "
                         f"{_when(b['created_at'])}  "
                         f"partitions {','.join(map(str, b['partitions']))}  "
                         f"{b['size_bytes']:,} bytes")
    return lines, failed


def local_backup_lines(cfg: ProfileConfig, instance_id: int | None = None) -> list[str]:
    """The backups under this machine's data dir (for workers that are stopped)."""
    roots = ([backups.root(cfg, instance_id)] if instance_id else
             sorted((cfg.data_dir / "backups").glob("instance-*")))
    return [f"instance {b.instance}  {b.name}  {_when(b.created_at)}  partitions "
            f"{','.join(sorted(b.partitions, key=int))}  {b.size_bytes:,} bytes"
            for r in roots for b in backups.list_backups(r)]


def list_backups(cfg: ProfileConfig, urls: tuple[str, ...] = (), instance_id: int | None = None,
                 ) -> tuple[list[str], list[Reply], Path | None]:
    """`profiles backup list`: (lines, members that failed, None) from the running cluster;
    with no worker answering and no --url, (lines, [], the folder read) from this machine's
    data dir. NoWorkerAnswers when --url was given and none answered."""
    from deploy.cluster import NoWorkerAnswers, discover
    from streams.web.auth import client_token
    try:
        lines, failed = backup_lines(discover(cfg, urls, client_token(cfg)), instance_id)
    except NoWorkerAnswers:
        if urls:
            raise
        return local_backup_lines(cfg, instance_id), [], cfg.data_dir / "backups"
    return lines, failed, None


def restore_backup(cfg: ProfileConfig, instance_id: int, name: str | None = None) -> str:
    """`profiles backup restore`: backup `name` (default: the newest) of a stopped local
    worker into its data dir; what was done. backups.BackupError when the worker runs or there
    is no such backup."""
    from deploy.workers import local_workers
    from streams.app import instance_for
    if any(w.pid and w.instance_id == instance_id for w in local_workers(cfg)):
        raise backups.BackupError(f"worker {instance_id} is running; stop it first")
    found = backups.list_backups(backups.root(cfg, instance_id))
    chosen = [b for b in found if b.name == name] if name else found[-1:]
    if not chosen:
        have = ", ".join(b.name for b in found) or "none"
        raise backups.BackupError(f"no backup {name or ''} for instance {instance_id} "
                                  f"(have: {have})")
    written = backups.restore(chosen[0], instance_for(cfg, instance_id).data_dir)
    return (f"restored {chosen[0].name}: {len(written)} partition databases into "
            f"{written[0].parent if written else '-'}")


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
