"""What `profiles status` and `profiles health` say about a local cluster: each worker's health
and monitoring figures, merged cluster-wide."""
from __future__ import annotations

from dataclasses import dataclass, field

from deploy.supervisor import read_cluster, supervisor_pid
from deploy.workers import WorkerCallError, call, local_workers, pid_alive
from features.config import ProfileConfig
from features.quality import QualitySummary

HEALTHY, DEGRADED, DOWN = 0, 1, 2


@dataclass
class WorkerStatus:
    instance_id: int | None
    url: str
    pid: int | None
    process_alive: bool | None
    health: dict | None = None
    monitor: dict | None = None
    error: str | None = None
    restarts: int = 0


@dataclass
class ClusterStatus:
    supervisor_pid: int | None
    monitor: bool
    workers: list[WorkerStatus] = field(default_factory=list)
    partitions: int = 0

    @property
    def answering(self) -> list[WorkerStatus]:
        return [w for w in self.workers if w.health is not None]

    def assigned(self) -> set[int]:
        return {p for w in self.answering if w.monitor for p in w.monitor["partitions"]}

    def total_lag(self) -> int | None:
        lags = [v for w in self.answering if w.monitor for v in w.monitor["lag"].values()
                if v is not None]
        return sum(lags) if lags else None

    def rate(self, key: str) -> float:
        return sum(w.monitor["rates"][key] for w in self.answering if w.monitor)

    def quality(self) -> QualitySummary:
        out = QualitySummary()
        for w in self.answering:
            if w.monitor and w.monitor["quality_scan"]["users"]:
                out = out.merge(QualitySummary.from_dict(w.monitor["quality_scan"]))
        return out

    def alerts(self) -> list[dict]:
        return [a for w in self.answering if w.monitor for a in w.monitor["alerts"]]


def gather(cfg: ProfileConfig, urls: list[str] | None = None) -> ClusterStatus:
    cluster = read_cluster(cfg)
    status = ClusterStatus(supervisor_pid(cfg), bool(cluster and cluster.get("monitor")),
                           partitions=cfg.kafka.partitions)
    if urls:
        refs = [(None, u, None, 0) for u in urls]
    elif cluster:
        refs = [(w["instance_id"], f"http://{cfg.worker.web_host}:{w['web_port']}", w["pid"],
                 w.get("restarts", 0)) for w in cluster["workers"]]
    else:
        refs = [(w.instance_id, w.url, w.pid, 0) for w in local_workers(cfg)]
    for iid, url, pid, restarts in refs:
        ws = WorkerStatus(iid, url, pid, pid_alive(pid) if pid else None,
                          restarts=restarts)
        try:
            ws.health = call(url + "/health", timeout=3)
            ws.monitor = call(url + "/monitor", timeout=5)
        except WorkerCallError as e:
            ws.error = str(e)
            if "HTTP 503" in ws.error:        # answering, but recovering
                ws.health = {"status": "recovering"}
        status.workers.append(ws)
    return status


def verdict(status: ClusterStatus) -> tuple[int, list[str]]:
    """0 healthy, 1 degraded, 2 down; with the reasons."""
    reasons = []
    if not status.answering:
        return DOWN, ["no worker answers"] + [w.error for w in status.workers if w.error]
    for w in status.workers:
        name = f"worker {w.instance_id or w.url}"
        if w.health is None:
            reasons.append(f"{name} does not answer ({w.error})")
        elif w.health.get("status") != "ok":
            reasons.append(f"{name} is {w.health.get('status')}")
    missing = set(range(status.partitions)) - status.assigned()
    if missing:
        reasons.append(f"partitions not assigned: {sorted(missing)}")
    for a in status.alerts():
        reasons.append(f"alert {a['alert']} firing ({a['severity']}): {a['metric']} "
                       f"{a['op']} {a['threshold']}, value {a['value']}")
    return (DEGRADED if reasons else HEALTHY), reasons


def render(status: ClusterStatus) -> list[str]:
    def n(v, digits=0):
        return "-" if v is None else f"{v:,.{digits}f}"
    lines = []
    if status.supervisor_pid:
        lines.append(f"supervisor pid {status.supervisor_pid} (auto-restart "
                     f"{'on' if status.monitor else 'off'})")
    lines.append(f"{len(status.answering)} of {len(status.workers)} workers answering")
    for w in status.workers:
        head = f"worker {w.instance_id or '?'}  {w.url}  pid {w.pid or '-'}"
        if w.health is None:
            lines.append(f"{head}  DOWN  {w.error}")
            continue
        m = w.monitor or {}
        lag = [v for v in m.get("lag", {}).values() if v is not None]
        lines.append(
            f"{head}  {w.health.get('status')}  partitions "
            f"{','.join(map(str, m.get('partitions', []))) or '-'}  lag "
            f"{n(sum(lag) if lag else None)}  events/s "
            f"{n(m.get('rates', {}).get('events_per_second'))}  publishes/s "
            f"{n(m.get('rates', {}).get('publishes_per_second'))}  restarts {w.restarts}")
    assigned = status.assigned()
    lines.append(f"cluster: {len(assigned)} of {status.partitions} partitions assigned, lag "
                 f"{n(status.total_lag())}, events/s {n(status.rate('events_per_second'))}, "
                 f"publishes/s {n(status.rate('publishes_per_second'))}, DLQ rate "
                 f"{n(100 * max([w.monitor['rates']['dlq_rate'] for w in status.answering if w.monitor] or [0]), 2)} %")
    q = status.quality()
    if q.users:
        qq = q.quality()
        lines.append(f"quality ({q.users:,} users sampled): coverage {qq['coverage']:.1%}, "
                     f"average confidence {qq['average_confidence']:.3f}, data richness "
                     f"{qq['data_richness']:.1f} events, freshness "
                     f"{qq['freshness_seconds'] / 3600:.1f} h, completeness "
                     f"{qq['completeness']:.1%}")
        b = q.business(5)
        lines.append(f"business: activity levels {b['activity_levels']}, user types "
                     f"{b['user_types']}, top tags {b['top_interest_tags']}, preferences "
                     f"{b['behavior_preferences']}")
    alerts = status.alerts()
    lines.append("alerts firing: " + (", ".join(f"{a['alert']} ({a['severity']})"
                                                for a in alerts) if alerts else "none"))
    return lines
