"""Finding a user's profile for the query API, whatever partitioner the producer used.

A user's state lives in the partition its events arrived on. The worker that owns the
partition `kafka.partitioner` gives for the user's key is asked first; when it does not have
the user (a producer partitioned with something else: the workers count such events,
streams.pipeline), every other worker is asked before the answer is "missing". Workers ask
each other with `?local=1`, which answers from the asked worker's own active partitions and
never routes again (no loops while a rebalance changes who owns what).
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import aiohttp

from streams.faust_compat.group import FaustGroup
from streams.state.table_keys import user_key
from streams.web.auth import peer_session

log = logging.getLogger(__name__)
LOCAL_PARAM = "local"
TIMEOUT_SECONDS = 10


class NoAssignment(RuntimeError):
    """The worker does not know the group's partition assignment yet (starting, rebalancing)."""


class Restoring(RuntimeError):
    """A worker asked for profiles is restoring its partitions from the changelog (a restart,
    or partitions it took over): a state read now may be older than what was published, or
    missing, so the read is refused until the restore is done."""


RETRY_AFTER_SECONDS = 1     # a restore takes seconds (BENCHMARKS.md, "Failover and restore")
UNAVAILABLE_STATUS = 503


class ProfileFinder:
    def __init__(self, pipeline):
        self.pl = pipeline
        self.app = pipeline.app
        self.group = FaustGroup(self.app, pipeline.cfg.kafka.topics.user_events)

    def me(self) -> str:
        return str(self.app.conf.canonical_url).rstrip("/")

    def owners(self) -> dict[int, str]:
        """partition -> URL of the worker with it active, from Faust's assignment."""
        return self.group.table_owners(self.pl.states.name)

    def _peer_session(self) -> aiohttp.ClientSession:
        """The HTTP session for asking other workers (where workers must present the API token
        to each other, this is the place that adds it)."""
        return peer_session(self.pl.cfg, TIMEOUT_SECONDS)

    def local(self, ids: list[str]) -> dict[str, dict | None]:
        """This worker's own answers; Restoring while its table recovery is under way."""
        if not self.group.ready():
            raise Restoring(f"worker {self.me()} is restoring its partitions from the "
                            f"changelog; ask again in {RETRY_AFTER_SECONDS} s")
        found = self.pl.profiles([int(s) for s in ids], self.pl.active_partitions())
        return {s: found[int(s)] for s in ids}

    async def find(self, ids: list[str]) -> dict[str, dict | None]:
        """Each id's profile record (None: no worker has it): from the routed owner, then from
        every other worker for the ids the owner does not have."""
        me, owners, expected = self.me(), self.owners(), self.pl.partition_check.expected
        if not owners:
            raise NoAssignment("no partition assignment yet (the worker is starting or the "
                               "group is rebalancing); ask again shortly")
        by_owner: dict[str, list[str]] = defaultdict(list)
        for s in ids:
            by_owner[owners.get(expected(user_key(int(s))), me)].append(s)
        async with self._peer_session() as http:
            out = await self._ask_all(http, by_owner)
            missing = [s for s in ids if out.get(s) is None]
            if missing:
                asked = {s: w for w, group in by_owner.items() for s in group}
                workers = set(owners.values()) | {me}
                again: dict[str, list[str]] = defaultdict(list)
                for s in missing:
                    for w in workers - {asked[s]}:
                        again[w].append(s)
                for s, rec in (await self._ask_all(http, again)).items():
                    if rec is not None:
                        out[s] = rec
                        self.pl.counts.queries_found_off_owner += 1
        return {s: out.get(s) for s in ids}

    async def _ask_all(self, http: aiohttp.ClientSession, by_worker: dict[str, list[str]]
                       ) -> dict[str, dict | None]:
        """Ask each worker for its ids at once; an id's answer is any worker's non-null one."""
        out: dict[str, dict | None] = {}
        me = self.me()

        async def one(worker: str, group: list[str]) -> dict[str, dict | None]:
            return self.local(group) if worker == me else await self._ask(http, worker, group)
        answers = await asyncio.gather(*(one(w, g) for w, g in by_worker.items()))
        for got in answers:
            for s, rec in got.items():
                if out.get(s) is None:
                    out[s] = rec
        return out

    async def _ask(self, http: aiohttp.ClientSession, worker: str, ids: list[str]
                   ) -> dict[str, dict | None]:
        """Another worker's local answers (None for each id when it cannot be asked)."""
        url = f"{worker}/profiles"
        try:
            async with http.get(url, params={"ids": ",".join(ids), LOCAL_PARAM: "1"}) as r:
                if r.status == 200:
                    return (await r.json())["profiles"]
                if r.status == UNAVAILABLE_STATUS and (await r.json()).get("restoring"):
                    raise Restoring(f"worker {worker} is restoring its partitions from the "
                                    f"changelog; ask again in {RETRY_AFTER_SECONDS} s")
                log.warning("asking %s for %d profiles: HTTP %s", worker, len(ids), r.status)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as e:
            log.warning("asking %s for %d profiles failed: %r", worker, len(ids), e)
        self.pl.counts.query_errors += 1
        return dict.fromkeys(ids)
