"""Where the stream takes over from a bootstrapped log (docs/BOOTSTRAP.md), in one of two modes:

- offsets: the log is an export of `user-events` up to known offsets (one per partition, the
  first offset NOT in the log). Each state's source offset is its partition's offset - 1 and the
  consumer group starts at the offsets: the stream applies exactly the events after the log.
- time: the log holds every event with a timestamp up to a time T. The states carry no source
  offset, the group starts at each partition's first retained offset, and the stream skips
  the events with timestamp <= T (the partition clock's `handover_ts`): they are in the states.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams.state.table_keys import NO_HANDOVER, PartitionClock


class BootstrapError(Exception):
    """A bootstrap that must not go on: bad input, or a cluster it would not leave exact."""


@dataclass(frozen=True)
class HandOver:
    partitions: int
    until_offsets: tuple[int, ...] | None = None     # mode offsets
    until_ts: int | None = None                      # mode time

    def __post_init__(self) -> None:
        if (self.until_offsets is None) == (self.until_ts is None):
            raise BootstrapError("give exactly one hand-over: --until-offsets FILE or --until TS")
        if self.until_offsets is not None and len(self.until_offsets) != self.partitions:
            raise BootstrapError(f"--until-offsets names {len(self.until_offsets)} partitions; "
                                 f"user-events has {self.partitions} (kafka.partitions)")

    @property
    def mode(self) -> str:
        return "offsets" if self.until_offsets is not None else "time"

    def source_offset(self, partition: int) -> int:
        """The source offset a bootstrapped state of this partition says it applied."""
        return -1 if self.until_offsets is None else self.until_offsets[partition] - 1

    def clock(self, partition: int, stream_time: int) -> PartitionClock:
        return PartitionClock(stream_time, self.source_offset(partition),
                              NO_HANDOVER if self.until_ts is None else self.until_ts)

    def describe(self) -> dict:
        if self.until_offsets is not None:
            return {"mode": "offsets",
                    "offsets": {str(p): o for p, o in enumerate(self.until_offsets)}}
        return {"mode": "time", "until": self.until_ts}


def read_offsets_file(path: str | Path, partitions: int) -> tuple[int, ...]:
    """A JSON object {"<partition>": <first offset not in the log>, ...} naming every partition
    of user-events (what `profiles bootstrap` prints as its hand-over offsets)."""
    try:
        raw = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as e:
        raise BootstrapError(f"--until-offsets {path}: {e}") from None
    if not isinstance(raw, dict):
        raise BootstrapError(f"--until-offsets {path}: a JSON object {{\"partition\": offset}}"
                             " is expected")
    out: dict[int, int] = {}
    for k, v in raw.items():
        if not str(k).isdigit() or type(v) is not int or v < 0:
            raise BootstrapError(f"--until-offsets {path}: {k!r}: {v!r} is not "
                                 "\"<partition>\": <offset >= 0>")
        out[int(k)] = v
    if sorted(out) != list(range(partitions)):
        raise BootstrapError(f"--until-offsets {path} names partitions {sorted(out)}; "
                             f"user-events has 0..{partitions - 1}")
    return tuple(out[p] for p in range(partitions))


def plan_id(events: str | Path, handover: HandOver, fingerprint: int) -> str:
    """What makes a bootstrap the same one when run again: the log (its files' names, sizes
    and modification times), the hand-over and the feature config."""
    p = Path(events)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    h = hashlib.sha256(orjson.dumps(handover.describe()))
    h.update(str(fingerprint).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]
