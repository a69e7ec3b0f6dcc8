"""HTTP reads: `GET /profiles/{user_id}` and `GET /profiles?ids=1,2,3`, each user found on the
worker that owns its partition under `kafka.partitioner`, else on any other
(streams.web.routing)."""
from __future__ import annotations

from streams.context import WorkerContext
from streams.faust_compat.consumer import consumer_hooks
from streams.web.routing import (
    LOCAL_PARAM,
    RETRY_AFTER_SECONDS,
    UNAVAILABLE_STATUS,
    NoAssignment,
    ProfileFinder,
    Restoring,
)

MAX_BATCH_IDS = 1000


def _user_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and int(raw) < 2 ** 63 else None


def _local_only(request) -> bool:
    """Asked by another worker: answer from this worker's own partitions, never route."""
    return request.query.get(LOCAL_PARAM) == "1"


def _not_yet(web, e: NoAssignment | Restoring):
    """503 with Retry-After: no assignment yet, or (`"restoring": true`) a restore under way;
    never an answer from a state the restore has not brought up to date yet."""
    body: dict = {"error": str(e)}
    if isinstance(e, Restoring):
        body["restoring"] = True
    return web.json(body, status=UNAVAILABLE_STATUS,
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


def add_routes(worker: WorkerContext) -> None:
    app, pipeline = worker.app, worker.pipeline
    finder = ProfileFinder(pipeline)
    hooks = consumer_hooks(app)

    @app.page("/profiles/{user_id}")
    async def get_profile(web, request, user_id: str):
        uid = _user_id(user_id)
        if uid is None:
            return web.json({"error": f"user id {user_id[:40]!r} is not a decimal integer"},
                            status=400)
        try:
            if _local_only(request):
                rec = finder.local([str(uid)])[str(uid)]
            else:
                rec = (await finder.find([str(uid)]))[str(uid)]
        except (NoAssignment, Restoring) as e:
            return _not_yet(web, e)
        if rec is None:
            return web.json({"error": f"no profile for user {uid}"}, status=404)
        return web.json(rec)

    @app.page("/profiles")
    async def get_profiles(web, request):
        raw = request.query.get("ids", "")
        ids = [s.strip() for s in raw.split(",") if s.strip()]
        bad = [s for s in ids if _user_id(s) is None]
        if not ids or bad or len(ids) > MAX_BATCH_IDS:
            return web.json({"error": "ids= takes 1 to 1000 comma-separated decimal user ids"
                             + (f"; bad: {bad[:5]}" if bad else "")}, status=400)
        try:
            out = finder.local(ids) if _local_only(request) else await finder.find(ids)
        except (NoAssignment, Restoring) as e:
            return _not_yet(web, e)
        return web.json({"profiles": {s: out.get(s) for s in ids},
                         "missing": [s for s in ids if out.get(s) is None]})

    @app.page("/states")
    async def local_states(web, request):
        """Summaries of the states of `ids` in this worker's active partitions (not routed:
        users of other workers are null). The chaos run counts lost and double-applied events
        with it."""
        ids = [s.strip() for s in request.query.get("ids", "").split(",") if s.strip()]
        if not ids or len(ids) > MAX_BATCH_IDS or any(_user_id(s) is None for s in ids):
            return web.json({"error": "ids= takes 1 to 1000 comma-separated decimal user ids"},
                            status=400)
        active = pipeline.active_partitions()
        return web.json({s: pipeline.state_summary(int(s), active) for s in ids})

    @app.page("/stats")
    async def stats(web, request):
        return web.json({"instance": worker.instance.instance_id,
                         "counts": pipeline.counts.to_dict(),
                         "partitioning": pipeline.partitioning(),
                         "items": len(pipeline.rt.catalog),
                         "items_ready": pipeline.items.ready.is_set(),
                         "state_cache": {"entries": len(pipeline.cache),
                                         "capacity": pipeline.cache.capacity,
                                         "dirty": pipeline.cache.dirty_count,
                                         "hits": pipeline.cache.hits,
                                         "misses": pipeline.cache.misses},
                         # records fetched across a seek, dropped and fetched again
                         "feed_stale_dropped": pipeline.feed.stale_dropped,
                         # records fetched and waiting for the agent
                         "feed_buffered": len(pipeline.feed),
                         "lifecycle": pipeline.lifecycle.status(),
                         # changelog records restored into the table (active and standby)
                         "changelog_restored": hooks.changelog_restored})
