"""The consumer group as a worker knows it: every member's advertised URL and the `user-events`
partitions it owns, from the assignment Faust hands to every member on each rebalance (the same
table the query API routes users by). `GET /cluster` serves it; the CLI asks one worker for it
and then talks to every member. `/cluster/relay` reaches a member for a caller that cannot
(a `kubectl port-forward` to one pod).

The cluster concept in the worker; as the CLI sees it: deploy/cluster.py, its commands
deploy/cli/cluster.py.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from features.config import ProfileConfig
from streams.web.auth import peer_session

if TYPE_CHECKING:
    import faust

RELAY_TIMEOUT = 3600.0       # a relayed job runs as long as the job does


@dataclass(frozen=True)
class Member:
    url: str                                # advertised: how the others reach it
    partitions: tuple[int, ...]             # user-events partitions it owns (actives)
    generation: int                         # of the assignment this comes from
    instance_id: int | None = None          # known for the worker answering only

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["partitions"] = list(self.partitions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Member":
        return cls(str(d["url"]).rstrip("/"), tuple(int(p) for p in d["partitions"]),
                   int(d["generation"]), d.get("instance_id"))


@dataclass(frozen=True)
class Membership:
    """One worker's view of the group."""
    self_url: str
    instance_id: int
    generation: int
    rebalancing: bool
    partitions: int                         # of user-events
    members: list[Member] = field(default_factory=list)

    def unassigned(self) -> list[int]:
        owned = {p for m in self.members for p in m.partitions}
        return [p for p in range(self.partitions) if p not in owned]

    def member(self, url: str) -> Member | None:
        return next((m for m in self.members if m.url == url.rstrip("/")), None)

    def to_dict(self) -> dict[str, Any]:
        return {"self": self.self_url, "instance_id": self.instance_id,
                "generation": self.generation, "rebalancing": self.rebalancing,
                "partitions": self.partitions, "unassigned": self.unassigned(),
                "members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Membership":
        return cls(str(d["self"]).rstrip("/"), int(d["instance_id"]), int(d["generation"]),
                   bool(d["rebalancing"]), int(d["partitions"]),
                   [Member.from_dict(m) for m in d["members"]])


def membership(app: "faust.App", cfg: ProfileConfig, instance_id: int) -> Membership:
    from streams.faust_compat.group import FaustGroup  # (the CLI imports this module)
    me = str(app.conf.canonical_url).rstrip("/")
    generation = app.consumer_generation_id
    topic = cfg.kafka.topics.user_events
    owners = FaustGroup(app, topic).member_partitions(topic)
    if me not in owners:                    # not assigned yet: at least this worker
        owners[me] = []
    members = [Member(url, tuple(parts), generation, instance_id if url == me else None)
               for url, parts in sorted(owners.items())]
    return Membership(me, instance_id, generation, bool(app.rebalancing), cfg.kafka.partitions,
                      members)


def add_cluster_routes(app: "faust.App", cfg: ProfileConfig, instance_id: int) -> None:
    import asyncio

    import aiohttp
    from faust.web import View

    @app.page("/cluster")
    async def cluster(web, request):
        return web.json(membership(app, cfg, instance_id).to_dict())

    @app.page("/cluster/relay")
    class Relay(View):
        """`?to=<member URL>&path=<path and query>`: the call made on that member with this
        worker's token; its answer passed back as it is (502 when the member does not
        answer). Only members of the group are reached (the token is always required)."""

        async def get(self, request):
            return await self.relay(request, "GET")

        async def post(self, request):
            return await self.relay(request, "POST")

        async def relay(self, request, method: str):
            to = request.query.get("to", "").rstrip("/")
            path = request.query.get("path", "")
            if membership(app, cfg, instance_id).member(to) is None:
                return self.json({"error": f"{to!r} is not a member of the group"}, status=404)
            target = urlsplit(to + path)
            if not path.startswith("/") or target.netloc != urlsplit(to).netloc or \
                    target.path.startswith("/cluster/relay"):
                return self.json({"error": "path= takes an absolute path of the member's API"},
                                 status=400)
            try:
                async with peer_session(cfg, RELAY_TIMEOUT) as http:
                    async with http.request(method, to + path) as r:
                        return self.bytes(await r.read(), status=r.status,
                                          content_type=r.content_type)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                return self.json({"error": f"member {to} does not answer: "
                                  f"{type(e).__name__}: {e}"}, status=502)
