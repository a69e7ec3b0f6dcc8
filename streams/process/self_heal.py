"""When a worker restarts itself in place (streams.web.restart: the pid stays, the start does the
rest), with no operator step:
- **Another cluster behind its broker address**: the broker lost its data (log dirs wiped) or
  was replaced, so every topic, committed offset and changelog the worker knew is gone; the
  cluster id changes. The start creates the topics again and drops the local state that is
  ahead of the new, empty log (streams.faust_compat.table_recovery).
- **Not a member of its group for long while the broker answers**: the group coordinator has
  not confirmed the worker (no accepted heartbeat, no assignment) for NOT_A_MEMBER_LIMIT. A
  client that bootstrapped against a broker in its controlled shutdown got metadata naming no
  broker, and aiokafka's coordinator routine died on it ("Did we not perform bootstrap?"): the
  worker answered /health for good and never joined (a chaos run).
Both are read every CHECK_EVERY seconds; the broker's answer is a Metadata request. The watch is
a service the app starts with its own services, not a Faust app task: those start only once
table recovery completes, which needs an assignment, so a worker that never joins would never
look (a chaos run: in seed 44 a worker restarted into a broker pause and waited for the rest of
the run, over ten minutes)."""
from __future__ import annotations

import logging
import time
from typing import Callable

import faust
from aiokafka.admin import AIOKafkaAdminClient
from mode import Service

from features.config import ProfileConfig
from streams.io.kafka_security import client_kwargs
from streams.web.restart import restart_in_place

log = logging.getLogger(__name__)
CHECK_EVERY = 5.0
# a graceful stop commits to topics that are gone and waits out Faust's timeouts: nothing of the
# old cluster is worth that wait
STOP_BOUND = 5.0
# far past any join: a session timeout for a dead member to expire, then the rebalance's join
NOT_A_MEMBER_FLOOR = 120.0


async def cluster_id(cfg: ProfileConfig) -> str | None:
    """The id of the cluster at kafka.broker (None: no answer, or a broker too old to say)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers,
                                request_timeout_ms=5000, **client_kwargs(cfg))
    try:
        await admin.start()
        return (await admin.describe_cluster()).get("cluster_id")
    except Exception:           # an outage is for the consumer and producers to wait out
        return None
    finally:
        await admin.close()


class SelfHeal:
    def __init__(self, app: faust.App | None, cfg: ProfileConfig,
                 confirmed_at: Callable[[], float]):
        """`confirmed_at`: when the group coordinator last confirmed this worker (monotonic;
        streams.faust_compat.membership.MembershipWatch)."""
        self.cfg = cfg
        self.confirmed_at = confirmed_at
        self.not_a_member_limit = max(NOT_A_MEMBER_FLOOR,
                                      4 * cfg.kafka.client.session_timeout_seconds)
        self.first: str | None = None
        self.watch: SelfHealWatch | None = None
        if app is not None:
            self.watch = SelfHealWatch(self)
            app.add_dependency(self.watch)

    def why_restart(self, seen: str | None, now: float) -> tuple[str, float] | None:
        """(why, how long the graceful stop may take) when the worker must restart, given the
        cluster id the broker just answered (None: no answer)."""
        if seen is None:
            return None                 # no news: an outage is waited out, not restarted through
        if self.first is None:
            self.first = seen
        if seen != self.first:
            return (f"the Kafka cluster at {self.cfg.kafka.bootstrap_servers} is another one "
                    f"(cluster id {self.first} -> {seen}): its topics and offsets are gone",
                    STOP_BOUND)
        unconfirmed = now - self.confirmed_at()
        if unconfirmed > self.not_a_member_limit:
            return (f"not a member of the consumer group for {unconfirmed:.0f} s while the "
                    "broker answers (the group coordinator confirmed no heartbeat and gave no "
                    "assignment)", STOP_BOUND)
        return None



class SelfHealWatch(Service):
    """SelfHeal's look every CHECK_EVERY seconds, from the app's start on."""

    def __init__(self, heal: SelfHeal, **kwargs: object):
        super().__init__(**kwargs)          # type: ignore[arg-type]
        self.heal = heal

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            why = self.heal.why_restart(await cluster_id(self.heal.cfg), time.monotonic())
            if why is not None:
                restart_in_place(why[0], hard_after=why[1])
                return
            await self.sleep(CHECK_EVERY)
