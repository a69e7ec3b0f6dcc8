"""The pipeline's state as the query API reads it, from this worker's active partitions: the
records decoded as v3 states (features.columnar) and the users of a request evaluated in one
call."""
from __future__ import annotations

import time
from typing import Any

from features import columnar
from features.runtime import FeatureRuntime
from streams.faust_compat.tables import PartitionedTable
from streams.monitoring.counters import EVENT_TRIGGER
from streams.state.table_keys import user_key


class ProfileReads:
    def __init__(self, rt: FeatureRuntime, states: PartitionedTable):
        self.rt = rt
        self.tz = rt.engine.tz
        self.states = states

    def read_state(self, user_id: int, partitions: list[int]) -> bytes | None:
        """The user's encoded state in the first of `partitions` that has it (open ones: a
        reader never opens a database Faust is not managing)."""
        key = user_key(user_id)
        for p in partitions:
            db = self.states.open_store(p)
            blob = db.get(key) if db is not None else None
            if blob is not None:
                return blob
        return None

    def profile(self, user_id: int, partitions: list[int]) -> dict[str, Any] | None:
        """The user's current profile record from the given (active) partitions' state (None
        if not there: standby copies may lag)."""
        return self.profiles([user_id], partitions)[user_id]

    def profiles(self, user_ids: list[int], partitions: list[int]
                 ) -> dict[int, dict[str, Any] | None]:
        """`profile` of each user, evaluated together."""
        out: dict[int, dict[str, Any] | None] = dict.fromkeys(user_ids)
        found, states = [], []
        for uid in out:
            blob = self.read_state(uid, partitions)
            if blob is not None:
                st = columnar.decode(blob, self.tz)
                if not st.empty:
                    found.append(uid)
                    states.append(st)
        if not found:
            return out
        # the latest published record's view: as of the last publish when a scheduled run
        # published after the user's last event
        profiles = columnar.evaluate_many(self.rt.engine, found, states,
                                          [max(s.T, s.published_as_of) for s in states],
                                          with_metrics=False)
        now = time.time()
        for uid, st, p in zip(found, states, profiles):
            out[uid] = p.to_record(st.version, EVENT_TRIGGER, now)
        return out

    def state_summary(self, user_id: int, partitions: list[int]) -> dict[str, Any] | None:
        """What the state holds, in numbers (events per day in the window, ids kept), read
        from the given (active) partitions only: standby copies may lag."""
        blob = self.read_state(user_id, partitions)
        if blob is None:
            return None
        return columnar.state_summary(columnar.decode(blob, self.tz), self.tz)
