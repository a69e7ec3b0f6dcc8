"""HTTP for monitoring: `GET /metrics` (Prometheus text format), `GET /monitor` (this worker's
figures as JSON, what `profiles status` reads), `GET /dashboard` (a self-refreshing page, no
external assets) and `GET /dashboard/data`."""
from __future__ import annotations

from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams.monitoring import WorkerMonitor

DASHBOARD = Path(__file__).with_name("static") / "dashboard.html"


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

    @app.page("/dashboard")
    async def dashboard(web, request):
        return web.bytes(page, headers={"Content-Type": "text/html; charset=utf-8"})

    @app.page("/dashboard/data")
    async def dashboard_data(web, request):
        return web.json({**monitor.snapshot(), "series": list(monitor.series)})
