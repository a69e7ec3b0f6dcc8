"""The pipeline's state as the query API reads it, from this worker's active partitions."""
from __future__ import annotations

import time
from typing import Any

from features.encoding import decode
from features.runtime import FeatureRuntime
from streams.counters import EVENT_TRIGGER
from streams.faust_compat.tables import PartitionedTable
from streams.state_table import user_key


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
            db = self.states.open_db(p)
            blob = db.get(key) if db is not None else None
            if blob is not None:
                return blob
        return None

    def profile(self, user_id: int, partitions: list[int]) -> dict[str, Any] | None:
        """The user's current profile record from the given (active) partitions' state (None
        if not there: standby copies may lag)."""
        blob = self.read_state(user_id, partitions)
        if blob is None:
            return None
        state = decode(blob, self.tz, event_ids=False)
        if state.empty:
            return None
        # the latest published record's view: as of the last publish when a scheduled run
        # published after the user's last event
        p = self.rt.engine.evaluate(user_id, state, max(state.T, state.published_as_of))
        return p.to_record(state.version, EVENT_TRIGGER, time.time())

    def state_summary(self, user_id: int, partitions: list[int]) -> dict[str, Any] | None:
        """What the state holds, in numbers (events per day in the window, ids kept), read
        from the given (active) partitions only: standby copies may lag."""
        blob = self.read_state(user_id, partitions)
        if blob is None:
            return None
        st = decode(blob, self.tz)
        return {"T": st.T, "source_offset": st.source_offset, "version": st.version,
                "events": sum(b.total for b in st.days.values()),
                "days": {str(d): b.total for d, b in sorted(st.days.items())},
                "event_ids": len(st.event_ids)}
