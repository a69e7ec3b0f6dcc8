"""HTTP reads: `GET /profiles/{user_id}` (routed to the worker that owns the user's partition) and
`GET /profiles?ids=1,2,3` (each id fetched from its owner)."""
from __future__ import annotations

import asyncio

from streams.auth import peer_session
from streams.pipeline import ProfilePipeline

MAX_BATCH_IDS = 1000


def _user_id(raw: str) -> int | None:
    return int(raw) if raw.isdigit() and int(raw) < 2 ** 63 else None


def add_routes(pipeline: ProfilePipeline) -> None:
    app = pipeline.app

    @app.page("/profiles/{user_id}")
    @app.table_route(table=pipeline.states, match_info="user_id")
    async def get_profile(web, request, user_id: str):
        uid = _user_id(user_id)
        if uid is None:
            return web.json({"error": f"user id {user_id[:40]!r} is not a decimal integer"},
                            status=400)
        rec = pipeline.profile(uid)
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
        me = str(app.conf.canonical_url).rstrip("/")
        out: dict[str, dict | None] = {}
        remote: dict[str, list[str]] = {}
        for s in ids:
            owner = str(app.router.key_store(pipeline.states.name, s)).rstrip("/")
            if owner == me:
                out[s] = pipeline.profile(int(s))
            else:
                remote.setdefault(owner, []).append(s)
        if remote:
            async with peer_session(pipeline.cfg, 10) as http:
                async def fetch(base: str, uid: str):
                    async with http.get(f"{base}/profiles/{uid}") as r:
                        out[uid] = await r.json() if r.status == 200 else None
                await asyncio.gather(*(fetch(b, u) for b, us in remote.items() for u in us))
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
        topic = pipeline.cfg.kafka.topics.user_events
        active = sorted(tp.partition for tp in app.assignor.assigned_actives()
                        if tp.topic == topic)
        return web.json({s: pipeline.state_summary(int(s), active) for s in ids})

    @app.page("/stats")
    async def stats(web, request):
        return web.json({"instance": app.profile_instance.instance_id,
                         "counts": dict(pipeline.counts),
                         "items": len(pipeline.rt.catalog),
                         "items_ready": pipeline.items.ready.is_set(),
                         "state_cache": {"entries": len(pipeline.cache),
                                         "capacity": pipeline.cache.capacity,
                                         "hits": pipeline.cache.hits,
                                         "misses": pipeline.cache.misses},
                         # records fetched across a seek, dropped and fetched again
                         "feed_stale_dropped": pipeline.feed.stale_dropped})
