"""A micro-batch of one topic's records as columns, the way the consumer fetched them: no message
object per record (docs/STREAMING.md, "How events reach the agent").

The drain loop (streams.faust_compat.drain) turns each partition's records of a fetch into one
`FetchedRun` (offsets, keys, values, timestamps, one list each); the feed (streams.io.event_feed)
hands the pipeline a `RawBatch` of whole or split runs. The batch's columns are the runs' lists
joined; tracking and acking (streams.faust_compat.feed) go run by run. A record becomes an object
only when it needs one of its own: a dead letter (`RawBatch.record`).
"""
from __future__ import annotations

from itertools import chain, repeat
from typing import Any, NamedTuple, Sequence


class RawRecord(NamedTuple):
    """One record of a batch, for what needs it whole (a dead letter's source)."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None     # seconds (the record's Kafka timestamp)


class FetchedRun:
    """Records of one partition from one fetch, in offset order."""
    __slots__ = ("tp", "offsets", "keys", "values", "timestamps")

    def __init__(self, tp: Any, offsets: list[int], keys: list[bytes | None],
                 values: list[bytes | None], timestamps: list[float | None]):
        self.tp = tp                    # faust.types.TP (topic, partition)
        self.offsets = offsets
        self.keys = keys
        self.values = values
        self.timestamps = timestamps

    @classmethod
    def of_records(cls, tp: Any, records: Sequence[Any]) -> FetchedRun:
        """From aiokafka ConsumerRecords (timestamps in ms, as Faust's messages: seconds)."""
        return cls(tp, [r.offset for r in records], [r.key for r in records],
                   [r.value for r in records],
                   [None if r.timestamp is None else r.timestamp / 1000.0 for r in records])

    def __len__(self) -> int:
        return len(self.offsets)

    def __repr__(self) -> str:
        o = self.offsets
        return f"<{self.tp.topic}[{self.tp.partition}] offsets {o[0]}..{o[-1]} ({len(o)})>" \
            if o else f"<{self.tp.topic}[{self.tp.partition}] empty>"

    def _slice(self, start: int, stop: int) -> FetchedRun:
        return FetchedRun(self.tp, self.offsets[start:stop], self.keys[start:stop],
                          self.values[start:stop], self.timestamps[start:stop])

    def tail(self, start: int) -> FetchedRun:
        """The records from index `start` on (empty when start >= len)."""
        return self._slice(start, len(self))

    def cut(self, first: int, size: int) -> list[FetchedRun]:
        """The first `first` records, then the rest in pieces of `size`: every record is copied
        once (taking a long run `size` at a time by splitting off the rest each time copied
        the rest again for every piece)."""
        n = len(self)
        bounds = [0, *range(first, n, size), n]
        return [self._slice(a, b) for a, b in zip(bounds, bounds[1:])]

    def contiguous_pieces(self) -> list[FetchedRun]:
        """The run cut where its offsets are not consecutive (normally: itself, whole)."""
        o = self.offsets
        if not o or o[-1] - o[0] == len(o) - 1:
            return [self]
        bounds = [0] + [i for i in range(1, len(o)) if o[i] != o[i - 1] + 1] + [len(o)]
        return [self._slice(a, b) for a, b in zip(bounds, bounds[1:])]


class RawBatch:
    """A micro-batch: runs of one topic, each partition's in offset order, as joined columns
    (index i is the same record in every column)."""
    __slots__ = ("runs", "offsets", "keys", "values", "timestamps", "partitions", "acked",
                 "__weakref__")

    def __init__(self, runs: list[FetchedRun]):
        self.runs = runs
        self.offsets: list[int] = list(chain.from_iterable(r.offsets for r in runs))
        self.keys: list[bytes | None] = list(chain.from_iterable(r.keys for r in runs))
        self.values: list[bytes | None] = list(chain.from_iterable(r.values for r in runs))
        self.timestamps: list[float | None] = list(
            chain.from_iterable(r.timestamps for r in runs))
        self.partitions: list[int] = list(
            chain.from_iterable(repeat(r.tp.partition, len(r)) for r in runs))
        self.acked = False

    def __len__(self) -> int:
        return len(self.offsets)

    def __repr__(self) -> str:
        return f"<RawBatch of {len(self)} records in {len(self.runs)} runs>"

    def record(self, i: int) -> RawRecord:
        return RawRecord(self.runs[0].tp.topic, self.partitions[i], self.offsets[i],
                         self.keys[i], self.values[i], self.timestamps[i])

    @classmethod
    def of_records(cls, records: Sequence[Any]) -> RawBatch:
        """From record-likes with topic, partition, offset, key, value, timestamp (seconds),
        in order: a run per stretch of one partition (tests, and callers holding messages)."""
        from faust.types import TP
        runs: list[FetchedRun] = []
        for m in records:
            if not runs or runs[-1].tp.partition != m.partition:
                runs.append(FetchedRun(TP(m.topic, m.partition), [], [], [], []))
            run = runs[-1]
            run.offsets.append(m.offset)
            run.keys.append(m.key)
            run.values.append(m.value)
            run.timestamps.append(m.timestamp)
        return cls(runs)
