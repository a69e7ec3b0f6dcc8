"""Kafka producers' key partitioners, and the check that tells which one a producer used.

Events are keyed by the decimal user_id, and the partition an event lands on is whatever the
producer's partitioner gives for that key. The query API must find a user's worker the same
way (`kafka.partitioner`), and each worker checks that events arrive where that partitioner
puts their key (`PartitionCheck`). Pure: no Kafka.

Known partitioners (for keyed messages; the `*_random` variants differ only for null keys):
- `murmur2`: the Java client's default, also aiokafka's, kafkajs' and Faust's;
  librdkafka's `murmur2` / `murmur2_random`.
- `crc32`: librdkafka's `consistent` / `consistent_random` (confluent-kafka's default).
- `fnv1a`: librdkafka's `fnv1a` / `fnv1a_random` (Sarama's hash partitioner).
tests/unit/features/test_partitioners.py holds each equal to librdkafka's own function.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

_M32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 with the Java client's seed (org.apache.kafka.common.utils.Utils)."""
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ length) & _M32
    n4 = length - length % 4
    for i in range(0, n4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & _M32
        k ^= k >> r
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
    extra = length % 4
    if extra == 3:
        h ^= data[n4 + 2] << 16
    if extra >= 2:
        h ^= data[n4 + 1] << 8
    if extra >= 1:
        h ^= data[n4]
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    h ^= h >> 15
    return h


def fnv1a(data: bytes) -> int:
    """librdkafka's rd_fnv1a: 32-bit FNV-1a, as a signed int made non-negative (as Sarama)."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & _M32
    return (0x100000000 - h) & _M32 if h & 0x80000000 else h


def murmur2_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def fnv1a_partition(key: bytes, partitions: int) -> int:
    return fnv1a(key) % partitions


PARTITIONERS: dict[str, Callable[[bytes, int], int]] = {
    "murmur2": murmur2_partition,
    "crc32": crc32_partition,
    "fnv1a": fnv1a_partition,
}

# What to tell a user whose producer's keys fit one of them.
CLIENT_NAMES = {
    "murmur2": "the Java client's default, also aiokafka's and kafkajs'; librdkafka's "
               "murmur2/murmur2_random",
    "crc32": "librdkafka's consistent/consistent_random, confluent-kafka's default",
    "fnv1a": "librdkafka's fnv1a/fnv1a_random",
}

# Evidence before naming the partitioner the keys fit: a wrong one fits k keys that are off
# the configured partition by chance with odds (1/partitions)^k, under 2e-5 for k=16.
MIN_EVIDENCE_KEYS = 16
_CACHE_LIMIT = 1 << 18          # keys whose partition is remembered (cleared when full)


@dataclass(frozen=True)
class Verdict:
    """What the keys seen off their configured partition say about the producer."""
    fits: frozenset[str]        # known partitioners that give every such key its partition
    evidence_keys: int          # distinct keys seen off the configured partition

    @property
    def keys_ignored(self) -> bool:
        """No known partitioner fits: a partitioner that ignores keys (librdkafka's random)."""
        return not self.fits


@dataclass
class PartitionCheck:
    """Checks events' arrival partitions against `configured` for `partitions` partitions.

    `expected(key)` is cached per key, so the hot path costs a dict lookup per distinct key.
    Keys off their expected partition narrow down which known partitioners could have put
    them there (`off`); `new_verdict()` returns a Verdict once it is clear and each time it
    changes, for the caller to log."""
    configured: str
    partitions: int
    _expected: dict[bytes, int] = field(default_factory=dict, repr=False)
    _off_seen: set[tuple[bytes, int]] = field(default_factory=set, repr=False)
    _fits: set[str] = field(default_factory=lambda: set(PARTITIONERS), repr=False)
    _evidence: int = 0
    _told: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.configured not in PARTITIONERS:
            raise ValueError(f"unknown partitioner {self.configured!r}; one of "
                             f"{', '.join(PARTITIONERS)}")
        self._partition_of = PARTITIONERS[self.configured]

    def expected(self, key: bytes) -> int:
        p = self._expected.get(key)
        if p is None:
            if len(self._expected) >= _CACHE_LIMIT:
                self._expected.clear()
            p = self._expected[key] = self._partition_of(key, self.partitions)
        return p

    def off(self, key: bytes, partition: int) -> bool:
        """Record a key seen on `partition`, not its expected one. True when some known
        partitioner puts it there; False when none does (the producer ignored the key)."""
        explained = [name for name, fn in PARTITIONERS.items()
                     if fn(key, self.partitions) == partition]
        if (key, partition) not in self._off_seen:
            if len(self._off_seen) >= _CACHE_LIMIT:
                self._off_seen.clear()
            self._off_seen.add((key, partition))
            self._evidence += 1
            self._fits.intersection_update(explained)
        return bool(explained)

    def new_verdict(self) -> Verdict | None:
        """The verdict, when it is clear and differs from the last one returned."""
        fits = frozenset(self._fits)
        decided = not fits or self._evidence >= MIN_EVIDENCE_KEYS
        if not decided or fits == self._told:
            return None
        self._told = fits
        return Verdict(fits, self._evidence)

    @property
    def fits(self) -> list[str] | None:
        """Known partitioners that fit every key seen off its partition (None: none seen)."""
        return sorted(self._fits) if self._evidence else None


def describe(verdict: Verdict, configured: str) -> str:
    """The log line for a verdict."""
    if verdict.keys_ignored:
        return ("events arrive on partitions that no known partitioner (" +
                ", ".join(PARTITIONERS) + ") gives for their keys: the producer's partitioner "
                "ignores keys (e.g. librdkafka's random), so a user's events are spread over "
                "partitions and each worker keeps part of the user's state; profiles are "
                "wrong until producers partition by key")
    names = sorted(verdict.fits)
    fit = " or ".join(f"{n} ({CLIENT_NAMES[n]})" for n in names)
    return (f"events arrive on partitions that kafka.partitioner {configured} does not give "
            f"for their keys; the keys fit {fit}, judged on {verdict.evidence_keys} keys off "
            f"their partition: set kafka.partitioner: {names[0]}. Queries still find every user "
            "(the routed owner first, then every other worker)")
