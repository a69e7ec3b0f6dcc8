"""HTTP for monitoring: `GET /metrics` (Prometheus text format), `GET /monitor` (this worker's
figures as JSON, what `profiles status` reads), `GET /monitor/trend` (this worker's history of
quality scans), `GET /dashboard` (a self-refreshing page, no external assets) and
`GET /dashboard/data` (the whole cluster's figures, merged: streams.web.dashboard_data)."""
from __future__ import annotations

import math
from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.monitoring.monitor import WorkerMonitor
from streams.web.dashboard_data import ALL, LOCAL_PARAM, UnknownWorker, cluster_figures, own_figures

DASHBOARD = Path(__file__).with_name("static") / "dashboard.html"


class BadParameter(ValueError):
    pass


def since_param(query) -> float | None:
    """`trend_since=<epoch seconds>`: only the trend points after it (and the one before)."""
    raw = query.get("trend_since")
    if raw in (None, ""):
        return None
    try:
        since = float(raw)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        raise BadParameter(f"trend_since= takes epoch seconds, not {raw[:40]!r}")
    return since


def add_monitor_routes(app: faust.App, monitor: WorkerMonitor) -> None:
    page = DASHBOARD.read_bytes()

    @app.page("/metrics")
    async def metrics(web, request):
        # (aiohttp refuses a charset inside content_type: the header goes as is)
        return web.bytes(generate_latest(monitor.registry),
                         headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/monitor")
    async def monitor_json(web, request):
        return web.json(monitor.snapshot())

    @app.page("/monitor/trend")
    async def monitor_trend(web, request):
        try:
            return web.json({"instance": monitor.instance,
                             **monitor.trend.to_dict(since_param(request.query))})
        except BadParameter as e:
            return web.json({"error": str(e)}, status=400)

    @app.page("/dashboard")
    async def dashboard(web, request):
        return web.bytes(page, headers={"Content-Type": "text/html; charset=utf-8"})

    @app.page("/dashboard/data")
    async def dashboard_data(web, request):
        """?local=1: this worker's own figures; else every member's merged (?worker=URL: one
        member's), with the list of members for the page's selector."""
        try:
            since = since_param(request.query)
            if request.query.get(LOCAL_PARAM) == "1":
                url = str(app.conf.canonical_url).rstrip("/")
                return web.json(own_figures(monitor, url, since))
            return web.json(await cluster_figures(monitor, request.query.get("worker", ALL),
                                                   since))
        except BadParameter as e:
            return web.json({"error": str(e)}, status=400)
        except UnknownWorker as e:
            return web.json({"error": str(e)}, status=404)
