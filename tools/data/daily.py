"""A plain synthetic log for the benchmarks that fill state (failover, bootstrap): each of USERS
users has one event on each of PER_USER consecutive days from T0, so every state holds several
day rows. Written day by day (all users' events of a day, then the next)."""
from __future__ import annotations

from pathlib import Path

_LINE = ('{"user_id":%d,"item_id":%d,"timestamp":%d,"action_type":%d,'
         '"event_id":"%d-%d"}\n')
_USERS_PER_WRITE = 100_000


def write_daily_events(path: Path, users: int, per_user: int, t0: int) -> int:
    """The log as JSONL; returns its events."""
    with open(path, "w") as f:
        for k in range(per_user):
            for a in range(1, users + 1, _USERS_PER_WRITE):
                f.write("".join(_LINE % (u, 1 + (u * 7 + k) % 5000, t0 + k * 86400 + u % 80000,
                                         k % 3, u, k)
                                for u in range(a, min(a + _USERS_PER_WRITE, users + 1))))
    return users * per_user
