"""Table recovery that heals: a partition whose local RocksDB state is ahead of its log is
dropped and rebuilt from its changelog, where Faust would raise ConsistencyError (or, with a
one-record changelog, keep the stale state). When a partition counts as ahead and why:
`ahead_of_log`; the story: docs/FAUST_INTERNALS.md#table-recovery and docs/STREAMING.md
("Restarts that heal").

Faust-streaming 0.15 internals: `Recovery._build_offsets`, `_seek_offsets`, `on_rebalance`,
`signal_recovery_end`, `active_highwaters`, `tp_to_table`, `TableManager._recovery`; pyproject
pins faust-streaming below 0.16.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import faust
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.types import TP

from streams.faust_compat.tables import partition_store
from streams.state import PartitionStore

log = logging.getLogger(__name__)

def drop_partition(table: Any, partition: int) -> None:
    """Empty one partition's local RocksDB (Faust's persisted offset included)."""
    partition_store(table, partition).drop()


def ahead_of_log(persisted: int | None, changelog_last: int | None, processed: int | None,
                 source_end: int | None) -> list[str]:
    """Why a partition's local state is ahead of its log (empty: it is not). `persisted`: the
    changelog offset its RocksDB last applied; `changelog_last`: the changelog's last offset
    (-1 empty); `processed`: the last source offset its state applied (-1 none); `source_end`:
    the source partition's end offset. None: not known."""
    why = []
    if persisted is not None and changelog_last is not None and persisted > changelog_last:
        why.append(f"changelog offset {persisted}, the changelog ends at {changelog_last}")
    if processed is not None and source_end is not None and processed >= source_end:
        why.append(f"processed the source up to offset {processed}, the source ends at "
                   f"{source_end - 1}")
    return why


class HealingRecovery(Recovery):
    # changelog topic -> (source topic, the last source offset a partition's state processed)
    source_checks: dict[str, tuple[str, Callable[[PartitionStore], int]]]
    # This rebalance's active highwaters and offsets are built (the recovery has sought its
    # active partitions and goes on to restore them): only from then may a restored run end the
    # recovery (streams.faust_compat.changelog_restore). Before, `need_recovery()` reads the
    # previous assignment's highwaters and can say "nothing left" for a partition not restored
    # yet (docs/FAUST_INTERNALS.md, "Restores a fetched run at a time").
    actives_built: bool = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.source_checks = {}

    async def on_rebalance(self, *args, **kwargs) -> None:
        """A new recovery is coming: its end is not signalled yet. Faust's loop clears the end
        signal before each record it takes from its queue; restored a run at a time, records
        never go there, so the previous recovery's end would still be signalled when this one
        waits for its own, and it would go on without restoring. (A recovery still waiting is
        called off by this rebalance's start signal.)"""
        self.actives_built = False
        self.signal_recovery_end.clear()
        await super().on_rebalance(*args, **kwargs)

    async def _seek_offsets(self, consumer, tps, offsets, title) -> None:
        await super()._seek_offsets(consumer, tps, offsets, title)
        if title == "active":
            self.actives_built = True

    async def _build_offsets(self, consumer, tps, destination, title) -> None:
        await super()._build_offsets(consumer, tps, destination, title)
        tps = sorted(tps)
        if not tps:
            return
        if title == "active":
            last = dict(self.active_highwaters)     # built just before: changelog end - 1
        else:
            last = {tp: (hw - 1 if hw is not None else -1)
                    for tp, hw in (await consumer.highwaters(*tps)).items()}
        processed, source_ends = await self._source_positions(consumer, tps)
        for tp in tps:
            why = ahead_of_log(destination.get(tp), last.get(tp), processed.get(tp),
                               source_ends.get(tp))
            if not why:
                continue
            table = self.tp_to_table[tp]
            log.warning("%s partition %d (%s): local state is ahead of its log (%s), as after "
                        "a broker restart or a recreated topic; dropping it and rebuilding it "
                        "from the changelog", table.name, tp.partition, title, "; ".join(why))
            drop_partition(table, tp.partition)
            destination[tp] = -1            # read the changelog from its start

    async def _source_positions(self, consumer, tps: list) -> tuple[dict, dict]:
        """For tables registered with check_source: (tp -> last source offset its local state
        processed, tp -> end offset of its source partition)."""
        checks = {tp: self.source_checks[tp.topic] for tp in tps
                  if tp.topic in self.source_checks}
        if not checks:
            return {}, {}
        sources = {tp: TP(topic, tp.partition) for tp, (topic, _) in checks.items()}
        ends = await consumer.highwaters(*set(sources.values()))
        processed = {tp: read(partition_store(self.tp_to_table[tp], tp.partition))
                     for tp, (_, read) in checks.items()}
        return processed, {tp: ends.get(src) for tp, src in sources.items()}


class HealingTableManager(TableManager):
    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = HealingRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def check_source(app: faust.App, table, source_topic: str,
                 processed: Callable[[PartitionStore], int]) -> None:
    """Also call a partition of `table` ahead when `processed(its store)`, the last offset of
    `source_topic` it applied, is at or past the end of that source partition."""
    recovery = getattr(app.tables, "recovery", None)
    if not isinstance(recovery, HealingRecovery):
        raise RuntimeError("the app was not created with HealingTableManager")
    recovery.source_checks[table.changelog_topic.get_topic_name()] = (source_topic, processed)
