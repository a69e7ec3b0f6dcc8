"""The consumer group, the assignment and table recovery as Faust's app knows them: one
adapter the pipeline, the scheduled runs, monitoring, the query router and `/cluster` read.

`member_partitions` reads the assignment Faust distributes to every member
(`external_topics_metadata()`, which exists on the concrete faust.assignor.PartitionAssignor
only, not on PartitionAssignorT).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

import faust
from faust.types import TP

from streams.faust_compat import feed
from streams.faust_compat.consumer import consumer_hooks
from streams.faust_compat.group_metadata import aiokafka_member, librdkafka_group_metadata
from streams.io.raw_batch import RawBatch

if TYPE_CHECKING:
    from faust.assignor import PartitionAssignor
    from faust.tables import TableManager


class FaustGroup:
    def __init__(self, app: faust.App, topic: str):
        self.app = app
        self.topic = topic              # the source topic (user-events)

    # -- the group
    @property
    def rebalancing(self) -> bool:
        return bool(self.app.rebalancing)

    @property
    def rebalance_count(self) -> int:
        """How many rebalances have begun (a batch taken before one is stale)."""
        return int(self.app.rebalancing_count)

    @property
    def generation(self) -> int | None:
        return self.app.consumer_generation_id

    def owned(self) -> list[int]:
        """The partitions of the source topic (and of its tables) this worker has active."""
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives()
                      if tp.topic == self.topic)

    def member_partitions(self, topic: str) -> dict[str, list[int]]:
        """Member URL -> partitions of `topic`, from the assignment Faust distributes."""
        dist = cast("PartitionAssignor", self.app.assignor).external_topics_metadata()
        return {str(url).rstrip("/"): sorted(tps.get(topic, [])) for url, tps in dist.items()}

    def table_owners(self, table_name: str) -> dict[int, str]:
        """Partition -> URL of the member with it active, from Faust's router."""
        out = {}
        for url, topics in self.app.router.table_metadata(table_name).items():
            for partitions in topics.values():
                for p in partitions:
                    out[p] = str(url).rstrip("/")
        return out

    def highwater(self, partition: int) -> int | None:
        """The source partition's high watermark from the latest fetch (None: not fetched)."""
        try:
            return self.app.consumer.highwater(TP(self.topic, partition))
        except Exception:               # not fetched from yet
            return None

    # -- table recovery
    def ready(self) -> bool:
        """Table recovery has completed and none is under way."""
        recovery = cast("TableManager", self.app.tables).recovery
        return recovery.completed.is_set() and not recovery.in_recovery

    def available(self, partition: int) -> bool:
        """The partition is still ours and no table recovery is rewriting it."""
        return partition in self.owned() and \
            not cast("TableManager", self.app.tables).recovery.in_recovery

    # -- batches taken from the raw feed (streams.faust_compat.feed)
    def track(self, batch: RawBatch) -> None:
        feed.track(self.app, batch)

    def untrack(self, batches: list[RawBatch]) -> None:
        feed.untrack(self.app, batches)

    def ack(self, batches: list[RawBatch]) -> None:
        feed.ack(self.app, batches)

    # -- exactly_once_v2 (streams.pipeline.outputs.TransactionalOutputs)
    def next_offsets(self, batches: list[RawBatch]) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the offset after the last record of `batches` there: where
        the group resumes once they are committed."""
        out: dict[tuple[str, int], int] = {}
        for b in batches:
            for run in b.runs:
                if len(run):
                    at = (run.tp.topic, run.tp.partition)
                    out[at] = max(out.get(at, 0), run.offsets[-1] + 1)
        return out

    def group_metadata(self, generation: int | None) -> bytes | None:
        """This member's group metadata, if the consumer is still a member in `generation`
        (the generation the checkpoint was computed in), else None. Read when the checkpoint
        is emitted, not when its transaction commits: by then a worker frozen past its session
        may have rejoined, and its offsets sent under the new generation would be accepted."""
        consumer = consumer_hooks(self.app).consumer
        if consumer is None:
            return None
        member_generation, member_id = aiokafka_member(consumer)
        if generation is None or member_generation != generation:
            return None
        return librdkafka_group_metadata(self.app.conf.id, member_generation, member_id)
