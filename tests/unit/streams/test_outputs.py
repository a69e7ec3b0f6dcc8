"""Where a checkpoint's outbox goes (streams.pipeline.outputs): the states reach the changelog
before the records are handed to the output producer. The other way round, a crash between the
two left a published record whose state was lost; the next owner, restoring the older state,
did not publish over it (make chaos, docs/RELIABILITY.md)."""
from __future__ import annotations

import asyncio

from streams.pipeline.outbox import Outbox, Record, StateWrite
from streams.pipeline.outputs import ProducerOutputs


class Table:
    """PartitionedTable's writes and `flush` (the changelog's delivery: `drain_changelog`)."""

    def __init__(self, log: list, drain_changelog):
        self.log = log
        self.drain_changelog = drain_changelog

    def set(self, partition, key, value):
        self.log.append(("state", key))

    async def flush(self):
        await self.drain_changelog(None)


class Publisher:
    def __init__(self, log: list):
        self.log = log

    async def send_many(self, records):
        self.log.extend(("record", r.key) for r in records)

    async def flush(self):
        self.log.append(("flush",))


def one_user_outputs(monkeypatch, log: list, drain_changelog) -> tuple:
    """ProducerOutputs on fakes that log what reaches them, with `drain_changelog` for the
    changelog's delivery; and an outbox of one state and one record."""
    out = ProducerOutputs(app=None, publisher=Publisher(log),
                          states=Table(log, drain_changelog), clocks=None)
    outbox = Outbox(records=[Record("profile-updates", b"7", b"{}")],
                    state_writes=[StateWrite(0, b"7", b"state")])
    return out, outbox


def test_records_go_to_the_producer_only_after_the_changelog_has_the_states(monkeypatch):
    log: list = []
    drained = asyncio.Event()

    async def drain_changelog(app):
        log.append(("drain starts",))
        await drained.wait()
        log.append(("drained",))

    out, outbox = one_user_outputs(monkeypatch, log, drain_changelog)

    async def run():
        await out.emit(outbox)
        assert log == [("state", b"7")]                 # emit hands over no record
        delivery = asyncio.create_task(out.deliver(outbox, lambda: True, []))
        await asyncio.sleep(0.01)
        assert ("record", b"7") not in log              # the changelog is not drained yet
        drained.set()
        assert await delivery

    asyncio.run(run())
    assert log == [("state", b"7"), ("drain starts",), ("drained",), ("record", b"7"), ("flush",)]


def test_no_record_goes_out_when_the_worker_is_fenced_once_the_states_are_delivered(
        monkeypatch):
    log: list = []

    async def drain_changelog(app):
        log.append(("drained",))

    out, outbox = one_user_outputs(monkeypatch, log, drain_changelog)

    async def run():
        await out.emit(outbox)
        return await out.deliver(outbox, lambda: False, [])

    assert asyncio.run(run()) is False
    assert log == [("state", b"7"), ("drained",)]
