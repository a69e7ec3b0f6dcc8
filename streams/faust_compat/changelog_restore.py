"""Changelog records restored a fetched run at a time: the records of one changelog partition
that one fetch returned go into the table together, where Faust hands each record to its
conductor, a flow-controlled queue and `Recovery._slurp_changelogs`, one task and a few
futures per record (about 6,600 records/s into a new owner, BENCHMARKS.md "Failover and
restore").

What the recovery loop does per record is done per run, in its order, for active and standby
partitions alike: records at or below the partition's recovery offset are skipped; the rest
are applied to the table (`Table.apply_changelog_batch`: our guard, then RocksDB and the
persisted offset) before the recovery offset moves to the run's last record, so the recovery
never counts a record read that its store does not hold. Then the loop's end checks: recovery
ends once no active partition has records left, and standbys are ready once none has. Faust's
own buffers are applied first, so no older record lands after a newer one.

Runs of partitions the recovery does not track, and of tables that listen to changelog events
(`Table.on_changelog_event`), still go the per-record way.

Faust-streaming 0.15 internals: `Recovery.active_tps`, `standby_tps`, `active_offsets`,
`standby_offsets`, `tp_to_table`, `buffers`, `flush_buffers`, `need_recovery`,
`standby_remaining_total`, `in_recovery`, `_set_recovery_ended`, `signal_recovery_end`,
`_actives_span`, `_standbys_span`, `_active_events_received_at`,
`_standby_events_received_at`, `_last_active_event_processed_at`, `tables.standbys_ready`,
`tables.on_standbys_ready`, `Table._on_changelog_event`. `upstream/recovery_slurp_changelogs.txt`
is the loop this follows; `check_upstream` fails with a diff when the installed one differs.
"""
from __future__ import annotations

from pathlib import Path
from time import monotonic
from typing import Any, Callable

from faust.tables.recovery import Recovery
from faust.utils.tracing import finish_span

SLURP_COPY = Path(__file__).with_name("upstream") / "recovery_slurp_changelogs.txt"


def takes(recovery: Recovery, tp: Any) -> bool:
    """Whether a run of `tp`'s records can be restored at once: a changelog partition the
    recovery tracks (active or standby) of a table that does not listen to changelog events."""
    if tp not in recovery.active_tps and tp not in recovery.standby_tps:
        return False
    table = recovery.tp_to_table.get(tp)
    return table is not None and getattr(table, "_on_changelog_event", None) is None


def restore_run(recovery: Recovery, tp: Any, messages: list[Any],
                create_event: Any) -> int:
    """Apply one fetched run of `tp`'s changelog records (Faust messages in offset order) as
    the recovery loop would apply them one by one; returns how many were applied (those above
    the partition's recovery offset). `create_event(key, value, headers, message)`: the app's."""
    active = tp in recovery.active_tps
    offsets = recovery.active_offsets if active else recovery.standby_offsets
    seen = offsets.get(tp)
    events = [create_event(m.key, m.value, m.headers, m) for m in messages
              if seen is None or m.offset > seen]
    if events:
        if any(recovery.buffers.values()):
            recovery.flush_buffers()        # older records first
        recovery.tp_to_table[tp].apply_changelog_batch(events)
        offsets[tp] = events[-1].message.offset
        now = monotonic()
        if active:
            recovery._active_events_received_at[tp] = now
            recovery._last_active_event_processed_at = now
        else:
            recovery._standby_events_received_at[tp] = now
    _after_records(recovery)
    return len(events)


def past_markers(recovery: Recovery, position: Callable[[Any], int | None]) -> int:
    """After a fetch's runs are all applied: a tracked partition whose fetch position
    (`position(tp)`) has passed its highwater is restored, though its last record lies below
    the highwater. Offsets no record comes for are transaction markers, and aborted records a
    read_committed consumer skips (exactly_once_v2 writes both), so Faust's loop, which waits
    for a record at the highwater, would wait for ever; it fixes this up only under its own
    transactions (`detect_aborted_tx`). The recovery offset and the store's persisted offset
    move to the highwater, then the loop's end checks run. Returns the partitions moved."""
    moved = 0
    for tps, offsets, highwaters in (
            (recovery.active_tps, recovery.active_offsets, recovery.active_highwaters),
            (recovery.standby_tps, recovery.standby_offsets, recovery.standby_highwaters)):
        for tp in tps:
            highwater, seen = highwaters.get(tp), offsets.get(tp)
            if highwater is None or seen is None or seen >= highwater or \
                    not takes(recovery, tp):
                continue
            at = position(tp)
            if at is None or at <= highwater:
                continue
            offsets[tp] = highwater
            data = recovery.tp_to_table[tp].data   # type: ignore[attr-defined]  # a Table's
            held = data.persisted_offset(tp)
            if held is None or held < highwater:
                data.set_persisted_offset(tp, highwater)
            moved += 1
    if moved:
        _after_records(recovery)
    return moved


def _after_records(recovery: Recovery) -> None:
    """The recovery loop's checks after a record (`_maybe_signal_recovery_end`, then the
    standbys' readiness), without the aborted-transaction fix-up it makes only on a timeout.
    The recovery ends only once this rebalance's active offsets are built
    (table_recovery.HealingRecovery.actives_built): a standby's run restored while they are
    being built would otherwise end it before a newly active partition is restored, and the
    recovery, waiting for that signal next, would go on without restoring it (make chaos with
    standbys: lost events)."""
    built = getattr(recovery, "actives_built", True)
    if recovery.in_recovery and built and not recovery.need_recovery():
        recovery.flush_buffers()
        recovery._set_recovery_ended()
        if recovery._actives_span is not None:
            recovery._actives_span.set_tag("Actives-Ready", True)
        recovery.signal_recovery_end.set()
    tables = recovery.tables
    standby_ready = recovery._standbys_span is None and tables.standbys_ready
    if not standby_ready and not recovery.standby_remaining_total():
        if recovery._standbys_span:
            finish_span(recovery._standbys_span)
            recovery._standbys_span = None
        tables.on_standbys_ready()


def check_upstream(stored: str | None = None, installed: str | None = None) -> None:
    """Raise UpstreamChanged, with a diff, when the installed faust-streaming's
    `Recovery._slurp_changelogs` differs from the original `restore_run` follows."""
    from streams.faust_compat.drain import check_original
    check_original(SLURP_COPY, Recovery._slurp_changelogs.fun,
                   "streams/faust_compat/changelog_restore.py (restore_run)", stored, installed)
