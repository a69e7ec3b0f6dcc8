"""A worker's counters: one typed structure that `/stats`, `/monitor` and `/metrics` all read."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields

from features.profile import EVENT_TRIGGER


@dataclass
class WorkerCounts:
    events_in: int = 0                  # read from user-events
    applied: int = 0                    # applied to a user's state
    duplicates: int = 0                 # skipped: event_id seen in the user's window
    redelivered: int = 0                # skipped: offset already applied (after a crash)
    handed_over: int = 0                # skipped: in the bootstrapped states (handover_ts)
    sent_again: int = 0                 # published records sent again before newer events'
    aggregates: int = 0                 # closed-day aggregates published
    partition_mismatch: int = 0         # events off the partition kafka.partitioner gives
    partition_unexplained: int = 0      # ... and off every known partitioner's
    rebalance_dropped_batches: int = 0  # batches taken before a rebalance: nothing emitted
    fenced_batches: int = 0             # checkpoints of a worker the group had evicted
    fenced_events: int = 0
    commits: int = 0                    # checkpoints committed (write-back flushes)
    state_writes: int = 0               # user states written (once per user per commit)
    held: int = 0                       # users held back at a commit (update_interval)
    held_flushed: int = 0               # held profiles published once their interval passed
    queries_found_off_owner: int = 0    # query answers found on a worker the key does not route to
    query_errors: int = 0               # workers that could not be asked
    dead_letters: Counter[str] = field(default_factory=Counter)     # by reason
    published: Counter[str] = field(default_factory=Counter)        # by trigger

    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())

    def published_total(self) -> int:
        return sum(self.published.values())

    def to_dict(self) -> dict[str, int]:
        """The flat form of `/stats` → counts: every counter above by its name, `published`
        (all triggers), `published_<trigger>` for each scheduled trigger that published, and
        `dlq_<reason>` for each reason that dead-lettered."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("dead_letters", "published")}
        out["published"] = self.published_total()
        for trigger, n in sorted(self.published.items()):
            if trigger != EVENT_TRIGGER and n:
                out[f"published_{trigger}"] = n
        for reason, n in sorted(self.dead_letters.items()):
            if n:
                out[f"dlq_{reason}"] = n
        return out
