"""The figures of `GET /dashboard/data`: the whole cluster, or one worker of it, from any worker.

The worker asked reads the group (streams.web.cluster.membership) and asks every other member for
its own figures (`/dashboard/data?local=1`, with the token: streams.web.auth.peer_session), all at
once, as the query API does; a member asked that way answers from itself alone. The figures
are merged exactly: counts and sums of the quality scans are added (features.quality,
features.trends), rates and lag summed, the DLQ share weighted by events; latency percentiles,
which do not add up, are the slowest worker's. A member that does not answer is listed with
the reason, and the figures say how many workers they cover.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import aiohttp

from features.quality import BusinessKeys, QualitySummary, filled
from features.trends import TrendPoint, merge_histories, merge_latest, points_from_dict
from streams.monitoring.monitor import SAMPLE_INTERVAL
from streams.web.auth import HINT, peer_session
from streams.web.cluster import membership

if TYPE_CHECKING:
    from streams.monitoring.monitor import WorkerMonitor

LOCAL_PARAM = "local"       # ?local=1: this worker's own figures (what members ask each other)
ALL = "all"                 # ?worker=all (the default): every member merged
PEER_TIMEOUT = 5.0
TOP_TAGS = 10
SUMMED = ("events_per_second", "publishes_per_second", "lag")    # a 2 s sample's fields
SLOWEST = ("p50", "p99")


class UnknownWorker(ValueError):
    """?worker= names no member of the group."""


def own_figures(monitor: "WorkerMonitor", url: str, since: float | None) -> dict[str, Any]:
    """This worker's figures: its `/monitor` snapshot, its 2 s samples, its trend history
    (the points after `since` and the last one before)."""
    return {**monitor.snapshot(), "url": url, "series": list(monitor.series),
            "trend": monitor.trend.to_dict(since)}


async def cluster_figures(monitor: "WorkerMonitor", selected: str = ALL,
                          since: float | None = None) -> dict[str, Any]:
    """Every member of the group with its figures or the reason it has none, and the merged
    figures of the selection (all of them, or the one of `selected`, a member's URL)."""
    cfg = monitor.pl.cfg
    group = membership(monitor.app, cfg, monitor.instance)
    selected = selected if selected == ALL else selected.rstrip("/")
    if selected != ALL and group.member(selected) is None:
        raise UnknownWorker(f"{selected!r} is not a member of the group (members: "
                            f"{', '.join(m.url for m in group.members)})")
    async with peer_session(cfg, PEER_TIMEOUT) as http:
        answers = await asyncio.gather(*(
            _figures_of(http, m.url, since) if m.url != group.self_url
            else _own(monitor, m.url, since) for m in group.members))
    workers, parts = [], []
    for m, (figures, error) in zip(group.members, answers):
        workers.append({"url": m.url, "self": m.url == group.self_url,
                        "instance": figures["instance"] if figures else m.instance_id,
                        "partitions": list(m.partitions), "error": error})
        if figures and selected in (ALL, m.url):
            parts.append(figures)
    workers.sort(key=lambda w: (w["instance"] is None, w["instance"] or 0, w["url"]))
    keys = BusinessKeys.of(cfg)
    return {"selected": selected, "at": time.time(), "workers": workers,
            "answering": sum(w["error"] is None for w in workers),
            "generation": group.generation, "rebalancing": group.rebalancing,
            "unassigned": group.unassigned(),
            "complete": all(w["error"] is None for w in workers
                            if selected in (ALL, w["url"])),
            "preference_labels": dict(cfg.behavior_preferences.preference_types),
            **merge_figures(parts, keys, since)}


async def _own(monitor: "WorkerMonitor", url: str, since: float | None
               ) -> tuple[dict | None, str | None]:
    return own_figures(monitor, url, since), None


async def _figures_of(http: aiohttp.ClientSession, url: str, since: float | None
                      ) -> tuple[dict | None, str | None]:
    params = {LOCAL_PARAM: "1"}
    if since is not None:
        params["trend_since"] = repr(since)
    try:
        async with http.get(f"{url}/dashboard/data", params=params) as r:
            if r.status == 200:
                return await r.json(), None
            if r.status == 401:
                return None, f"refused this worker's token (HTTP 401): {HINT}"
            return None, f"HTTP {r.status}: {(await r.text())[:200]}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
        return None, f"does not answer: {type(e).__name__}: {e}"


def merge_figures(parts: list[dict[str, Any]], keys: BusinessKeys,
                  since: float | None = None) -> dict[str, Any]:
    """Workers' `own_figures` merged: what the dashboard draws."""
    quality = QualitySummary()
    for p in parts:
        quality = quality.merge(QualitySummary.from_dict(p["quality_scan"]))
    eps = sum(p["rates"]["events_per_second"] for p in parts)
    dlq_per_s = sum(p["rates"]["dlq_rate"] * p["rates"]["events_per_second"] for p in parts)
    lags = [v for p in parts for v in p["lag"].values() if v is not None]
    step = max((p["trend"]["step"] for p in parts), default=SAMPLE_INTERVAL)
    trend = merge_histories([points_from_dict(p["trend"]) for p in parts], step, since)
    series = merge_latest([[(s["t"], s) for s in p["series"]] for p in parts],
                          SAMPLE_INTERVAL, _combine_samples)
    return {
        "workers_shown": len(parts),
        "instances": [p["instance"] for p in parts],
        "rates": {"events_per_second": eps,
                  "publishes_per_second": sum(p["rates"]["publishes_per_second"]
                                              for p in parts),
                  "dlq_rate": dlq_per_s / eps if eps else 0.0},
        "lag": sum(lags) if lags else None,
        "latency": {clock: {q: _max(p["latency"][clock][q] for p in parts) for q in SLOWEST}
                    for clock in ("event", "ingest")},
        "quality_scan": {"users": quality.users, "quality": quality.quality(),
                         "business": business_view(quality, keys)},
        "alerts": [{**a, "worker": p["url"]} for p in parts for a in p["alerts"]],
        "series": [{**s, "t": t} for t, s in series],
        "trend": {"step": step, "span_seconds": max((p["trend"]["span_seconds"] for p in parts),
                                                    default=0),
                  "points": [trend_point_view(p, keys) for p in trend]},
    }


def business_view(q: QualitySummary, keys: BusinessKeys) -> dict[str, dict[str, int]]:
    """Every configured level, type and preference (0 included); the hottest tags."""
    dists = q.distributions(keys)
    return {"activity_levels": dists["activity_levels"], "user_types": dists["user_types"],
            "top_interest_tags": dict(q.tags.most_common(TOP_TAGS)),
            "behavior_preferences": dists["behavior_preferences"]}


def trend_point_view(p: TrendPoint, keys: BusinessKeys) -> dict[str, Any]:
    s = p.summary
    return {"t": p.t, "users": s.users, "quality": s.quality(),
            "levels": filled(s.levels, keys.levels), "types": filled(s.types, keys.types),
            "tags": dict(s.tags), "preferences": filled(s.preferences, keys.preferences)}


def _combine_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(s[k] or 0 for s in samples) for k in SUMMED}
    out.update({k: _max(s[k] for s in samples) for k in SLOWEST})
    return out


def _max(xs) -> float | None:
    vals = [x for x in xs if x is not None]
    return max(vals) if vals else None
