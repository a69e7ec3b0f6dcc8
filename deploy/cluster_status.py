"""What `profiles status` and `profiles health` say about a cluster: every member of the group
(found through one worker, deploy.cluster), each one's health and monitoring figures, merged
cluster-wide; members that do not answer or refuse the token, and partitions no answering
worker owns, are named."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from deploy.cluster import Cluster, NoWorkerAnswers, discover
from deploy.supervisor import read_cluster, supervisor_pid
from deploy.workers import WorkerCallError, pid_alive
from features.config import ProfileConfig
from features.quality import QualitySummary
from streams.web.auth import client_token
from streams.web.cluster import Member

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
    refused: bool = False               # answered, but not to our token
    in_group: bool = True               # False: a worker of the local supervisor, not a member


@dataclass
class ClusterStatus:
    supervisor_pid: int | None
    monitor: bool
    workers: list[WorkerStatus] = field(default_factory=list)
    partitions: int = 0
    asked: str | None = None            # the worker the group was read from
    generation: int | None = None
    rebalancing: bool = False
    errors: list[str] = field(default_factory=list)     # when the group could not be read
    refused: bool = False                                # ... because a worker refused the token

    @property
    def answering(self) -> list[WorkerStatus]:
        return [w for w in self.workers if w.health is not None]

    def assigned(self) -> set[int]:
        return {p for w in self.answering if w.monitor for p in w.monitor["partitions"]}

    def recovering(self) -> list[int]:
        """Partitions an answering worker is still restoring from the changelog: their users'
        states are not all there yet, and scheduled runs wait for them."""
        return sorted({p for w in self.answering
                       for p in (w.health or {}).get("recovering_partitions", [])})

    def unowned(self) -> list[int]:
        """Partitions no answering worker owns."""
        have = self.assigned()
        return [p for p in range(self.partitions) if p not in have]

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

    def to_dict(self) -> dict:
        """`profiles status --json`."""
        return {"asked": self.asked, "generation": self.generation,
                "partitions": self.partitions, "unowned": self.unowned(),
                "recovering": self.recovering(),
                "workers": [w.__dict__ for w in self.workers],
                "quality": self.quality().to_dict(), "alerts": self.alerts()}


def _supervised(cfg: ProfileConfig) -> dict[str, dict]:
    """URL -> the local supervisor's record of that worker (instance, pid, restarts)."""
    state = read_cluster(cfg) or {}
    host = cfg.worker.advertised_host or cfg.worker.web_host      # as the worker advertises it
    return {f"http://{host}:{w['web_port']}": w for w in state.get("workers", [])}


def _member_status(cluster: Cluster, m: Member, local: dict | None) -> WorkerStatus:
    pid = local["pid"] if local else None
    ws = WorkerStatus(m.instance_id or (local or {}).get("instance_id"), m.url, pid,
                      pid_alive(pid) if pid else None,
                      restarts=(local or {}).get("restarts", 0))
    try:
        try:
            ws.health = cluster.call(m, "/health", timeout=3)
        except WorkerCallError as e:
            if e.status != 503:
                raise
            ws.health = e.body or {"status": "recovering"}      # answering, but recovering
        ws.instance_id = ws.health.get("instance", ws.instance_id)
        ws.monitor = cluster.call(m, "/monitor", timeout=5)
    except WorkerCallError as e:
        ws.error, ws.refused = str(e), e.refused
    return ws


def gather(cfg: ProfileConfig, urls: list[str] | None = None) -> ClusterStatus:
    supervised = _supervised(cfg)
    state = read_cluster(cfg)
    status = ClusterStatus(supervisor_pid(cfg), bool(state and state.get("monitor")),
                           partitions=cfg.kafka.partitions)
    try:
        cluster = discover(cfg, urls or (), client_token(cfg))
    except NoWorkerAnswers as e:
        status.errors, status.refused = [str(x) for x in e.errors], e.refused
        status.workers = [WorkerStatus(w["instance_id"], url, w["pid"], pid_alive(w["pid"]),
                                       error="does not answer", restarts=w.get("restarts", 0))
                          for url, w in supervised.items()]
        return status
    v = cluster.view
    status.asked, status.generation, status.rebalancing = cluster.asked, v.generation, \
        v.rebalancing
    status.partitions = v.partitions
    found = cluster.each(lambda m: _member_status(cluster, m, supervised.get(m.url)))
    status.workers = sorted(found, key=lambda w: (w.instance_id is None, w.instance_id or 0,
                                                  w.url))
    for url, w in supervised.items():  # the supervisor runs it, the group does not have it
        if v.member(url) is None:
            status.workers.append(WorkerStatus(
                w["instance_id"], url, w["pid"], pid_alive(w["pid"]), restarts=w.get("restarts", 0),
                error="not a member of the group", in_group=False))
    return status


def _name(w: WorkerStatus) -> str:
    return f"worker {w.instance_id or '?'} ({w.url})"


def verdict(status: ClusterStatus) -> tuple[int, list[str]]:
    """0 healthy, 1 degraded, 2 down; with the reasons."""
    reasons = []
    if not status.answering:
        head = "a worker refuses this command's token" if status.refused else \
            "no worker answers"
        return DOWN, [head] + status.errors + \
            [f"{_name(w)}: {w.error}" for w in status.workers if w.error]
    for w in status.workers:
        if not w.in_group:
            reasons.append(f"{_name(w)} runs but is not a member of the group")
        elif w.refused:                 # (its error is set with refused)
            reasons.append(f"{_name(w)} {cast(str, w.error).split(': ', 1)[-1]}")
        elif w.health is None:
            reasons.append(f"{_name(w)} does not answer ({w.error})")
        elif w.health.get("status") != "ok":
            parts = w.health.get("recovering_partitions")
            reasons.append(f"{_name(w)} is {w.health.get('status')}"
                           + (f" (partitions {','.join(map(str, parts))})" if parts else ""))
    if status.rebalancing:
        reasons.append(f"the group is rebalancing (generation {status.generation})")
    if status.unowned():
        reasons.append(f"partitions no answering worker owns: {status.unowned()}")
    for a in status.alerts():
        reasons.append(f"alert {a['alert']} firing ({a['severity']}): {a['metric']} "
                       f"{a['op']} {a['threshold']}, value {a['value']}")
    return (DEGRADED if reasons else HEALTHY), reasons


def _max_dlq_rate(status: ClusterStatus) -> float:
    return max([w.monitor["rates"]["dlq_rate"] for w in status.answering if w.monitor] or [0])


def render(status: ClusterStatus) -> list[str]:
    def n(v, digits=0):
        return "-" if v is None else f"{v:,.{digits}f}"
    lines = []
    if status.supervisor_pid:
        lines.append(f"supervisor pid {status.supervisor_pid} (auto-restart "
                     f"{'on' if status.monitor else 'off'})")
    if status.asked:
        lines.append(f"group read from {status.asked}: {sum(w.in_group for w in status.workers)}"
                     f" members, generation {status.generation}"
                     + (", rebalancing" if status.rebalancing else ""))
    else:
        lines.extend(f"cannot read the group: {e}" for e in status.errors)
    lines.append(f"{len(status.answering)} of {len(status.workers)} workers answering")
    for w in status.workers:
        head = f"worker {w.instance_id or '?'}  {w.url}  pid {w.pid or '-'}"
        if w.health is None or w.refused:
            state = "REFUSED" if w.refused else "NOT IN GROUP" if not w.in_group else "DOWN"
            lines.append(f"{head}  {state}  {w.error}")
            continue
        m = w.monitor or {}
        lag = [v for v in m.get("lag", {}).values() if v is not None]
        state = cast(str, w.health.get("status"))
        if w.health.get("recovering_partitions"):
            state += " " + ",".join(map(str, w.health["recovering_partitions"]))
        lines.append(
            f"{head}  {state}  partitions "
            f"{','.join(map(str, m.get('partitions', []))) or '-'}  lag "
            f"{n(sum(lag) if lag else None)}  events/s "
            f"{n(m.get('rates', {}).get('events_per_second'))}  publishes/s "
            f"{n(m.get('rates', {}).get('publishes_per_second'))}  restarts {w.restarts}")
    assigned = status.assigned()
    lines.append(f"cluster: {len(assigned)} of {status.partitions} partitions assigned, lag "
                 f"{n(status.total_lag())}, events/s {n(status.rate('events_per_second'))}, "
                 f"publishes/s {n(status.rate('publishes_per_second'))}, DLQ rate "
                 f"{n(100 * _max_dlq_rate(status), 2)} %")
    if status.unowned():
        lines.append(f"partitions no answering worker owns: "
                     f"{','.join(map(str, status.unowned()))}")
    if status.recovering():
        lines.append(f"partitions recovering (restored from their changelog; scheduled runs "
                     f"wait for them): {','.join(map(str, status.recovering()))}")
    q = status.quality()
    if q.users:
        qq = q.quality()
        lines.append(f"quality ({q.users:,} users sampled): coverage {qq['coverage']:.1%}, "
                     f"average confidence {qq['average_confidence']:.3f}, data richness "
                     f"{qq['data_richness']:.1f} events, freshness "
                     f"{cast(float, qq['freshness_seconds']) / 3600:.1f} h, completeness "
                     f"{qq['completeness']:.1%}")
        b = q.business(5)
        lines.append(f"business: activity levels {b['activity_levels']}, user types "
                     f"{b['user_types']}, top tags {b['top_interest_tags']}, preferences "
                     f"{b['behavior_preferences']}")
    alerts = status.alerts()
    lines.append("alerts firing: " + (", ".join(f"{a['alert']} ({a['severity']})"
                                                for a in alerts) if alerts else "none"))
    return lines
