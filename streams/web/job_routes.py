"""HTTP for scheduled jobs: `POST /jobs/{hourly|daily|weekly}[?full=1]` runs one now on this
worker's partitions and answers its report (bearer token required); `GET /jobs` shows the
running job and the last report of each; `GET /backups` lists this worker's backups."""
from __future__ import annotations

import asyncio

from faust.web import Request, Response, View

from features.schedule import JOBS
from streams.context import WorkerContext
from streams.jobs import JobBusy, NotReady
from streams.state import backups
from streams.web.auth import api_token, authorized


def add_job_routes(worker: WorkerContext) -> None:
    app, jobs, cfg, iid = worker.app, worker.jobs, worker.config, worker.instance.instance_id
    token = api_token(cfg)

    @app.page("/jobs/{name}")
    class RunJob(View):
        async def get(self, request: Request, name: str) -> Response:
            return self.json({"error": "POST to run a job; GET /jobs shows reports"}, status=405)

        async def post(self, request: Request, name: str) -> Response:
            if not authorized(request.headers.get("Authorization"), token):
                return self.json({"error": "a bearer token is required (Authorization: Bearer "
                                  "<token>; see worker.api_token_file)"}, status=401)
            if name not in JOBS:
                return self.json({"error": f"unknown job {name!r}; one of {', '.join(JOBS)}"},
                                 status=404)
            full = request.query.get("full", "") in ("1", "true", "yes")
            try:
                report = await jobs.run(name, full=full)
            except JobBusy as e:
                return self.json({"error": str(e)}, status=409)
            except NotReady as e:
                return self.json({"error": str(e)}, status=503)
            return self.json(report, status=500 if report.get("error") else 200)

    @app.page("/jobs")
    async def job_reports(web, request):
        return web.json({"instance": iid,
                         "running": jobs.running,
                         "index_unchecked": sorted(set(jobs.owned()) - jobs.index_checked),
                         "last": jobs.last})

    def listing() -> list[dict]:
        return [{"name": b.name, "created_at": b.created_at, "instance": b.instance,
                 "partitions": sorted(map(int, b.partitions)), "size_bytes": b.size_bytes}
                for b in backups.list_backups(backups.root(cfg, iid))]

    @app.page("/backups")
    async def backup_list(web, request):
        return web.json({"instance": iid, "backups": await asyncio.to_thread(listing)})
