"""A running cluster as the CLI sees it, wherever its workers run: the CLI asks one reachable
worker for the consumer group (`GET /cluster`) and then talks to every member. A member whose
advertised address cannot be reached from here (a `kubectl port-forward` to one pod) is reached
through the worker asked (`/cluster/relay`).

The first worker is the first of: `--url` (repeatable), `$PROFILES_WORKER_URL` (comma-
separated), the live local workers' pid files, the configured address (worker.web_host and
worker.web_port).

The cluster concept in the CLI's operations layer; in the worker: streams/web/cluster.py, its
commands deploy/cli/cluster.py.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, TypeVar
from urllib.parse import urlencode

from deploy.workers import WorkerCallError, call, configured_url, local_workers
from features.config import ProfileConfig
from streams.web.cluster import Member, Membership

ENV_URL = "PROFILES_WORKER_URL"
T = TypeVar("T")


class NoWorkerAnswers(WorkerCallError):
    """No worker gave the group: none answered, or those that did refused the token."""

    def __init__(self, errors: list[WorkerCallError]):
        super().__init__("cannot read the group: " + "; ".join(map(str, errors)),
                         next((e.status for e in errors if e.refused), None))
        self.errors = errors


def first_workers(cfg: ProfileConfig, urls: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Where to ask for the group, in order."""
    if urls:
        found = list(urls)
    elif os.environ.get(ENV_URL, "").strip():
        found = os.environ[ENV_URL].split(",")
    else:
        found = [w.url for w in local_workers(cfg)] + [configured_url(cfg)]
    out: list[str] = []
    for u in (u.strip().rstrip("/") for u in found):
        if u and u not in out:
            out.append(u if "://" in u else "http://" + u)
    return out


@dataclass
class Reply:
    """One member's answer to one call: `body`, or the `error`."""
    member: Member
    body: dict | None = None
    error: WorkerCallError | None = None


@dataclass
class Cluster:
    asked: str                          # the URL the first answering worker was reached at
    view: Membership                    # its view of the group
    token: str | None = None
    not_answering: list[WorkerCallError] = field(default_factory=list)  # asked before it
    _relayed: set[str] = field(default_factory=set)

    @property
    def members(self) -> list[Member]:
        return self.view.members

    def call(self, member: Member, path: str, method: str = "GET",
             timeout: float = 30.0) -> dict:
        """`path` of the member's API; through the worker asked when the member's advertised
        address cannot be reached from here."""
        if member.url == self.view.self_url:
            return call(self.asked + path, method, self.token, timeout)
        direct = f"no worker answers at {member.url}"
        if member.url not in self._relayed:
            try:
                return call(member.url + path, method, self.token, timeout)
            except WorkerCallError as e:
                if not e.unreachable:
                    raise
                self._relayed.add(member.url)
                direct = str(e)
        relay = f"{self.asked}/cluster/relay?" + urlencode({"to": member.url, "path": path})
        try:
            return call(relay, method, self.token, timeout)
        except WorkerCallError as e:
            if e.status == 502:         # the worker asked cannot reach it either
                raise WorkerCallError(f"{direct} (nor does it answer {self.asked})",
                                      unreachable=True) from None
            raise

    def each(self, fn: Callable[[Member], T], members: list[Member] | None = None) -> list[T]:
        """fn(member) for every member at once (each works on its own partitions)."""
        todo = self.members if members is None else members
        with ThreadPoolExecutor(max(1, len(todo))) as pool:
            return list(pool.map(fn, todo))

    def call_all(self, path: str, method: str = "GET", timeout: float = 30.0,
                 members: list[Member] | None = None) -> list[Reply]:
        def one(m: Member) -> Reply:
            try:
                return Reply(m, self.call(m, path, method, timeout))
            except WorkerCallError as e:
                return Reply(m, error=e)
        return self.each(one, members)


def discover(cfg: ProfileConfig, urls: tuple[str, ...] | list[str] = (),
             token: str | None = None) -> Cluster:
    """The group, from the first worker that answers; NoWorkerAnswers when none does."""
    errors: list[WorkerCallError] = []
    for url in first_workers(cfg, urls):
        try:
            view = Membership.from_dict(call(url + "/cluster", token=token, timeout=5))
        except WorkerCallError as e:
            errors.append(e)
            continue
        return Cluster(url, view, token, errors)
    raise NoWorkerAnswers(errors)


def query_profiles(cfg: ProfileConfig, user_ids: tuple[str, ...] | list[str],
                   url: str | None = None, token: str | None = None) -> dict:
    """`profiles query`: the profiles of user_ids from the first worker that answers (it routes
    each id to its owner). WorkerCallError from a worker that answered with an error, or the
    last one's when none answered."""
    path = (f"/profiles/{user_ids[0]}" if len(user_ids) == 1 else
            f"/profiles?ids={','.join(user_ids)}")
    err = WorkerCallError(f"no worker to ask at {url}", unreachable=True)
    for base in first_workers(cfg, [url] if url else []):
        try:
            return call(base + path, token=token, timeout=10)
        except WorkerCallError as e:
            if not e.unreachable:
                raise
            err = e
    raise err
