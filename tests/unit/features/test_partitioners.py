"""The partitioners equal librdkafka's own functions (called in the librdkafka that
confluent-kafka ships) key for key, and murmur2 equals aiokafka's; the check's verdicts."""
from __future__ import annotations

import ctypes
import random
from pathlib import Path

import confluent_kafka
import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from features.partitioners import (
    PARTITIONERS,
    PartitionCheck,
    crc32_partition,
    describe,
    murmur2,
    murmur2_partition,
)


def _librdkafka():
    libs = Path(confluent_kafka.__file__).resolve().parents[1] / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    assert found, f"no librdkafka in {libs}"
    lib = ctypes.CDLL(str(found[0]))
    funcs = {}
    for ours, theirs in (("murmur2", "murmur2_random"), ("crc32", "consistent_random"),
                         ("fnv1a", "fnv1a_random")):
        f = getattr(lib, f"rd_kafka_msg_partitioner_{theirs}")
        f.restype = ctypes.c_int32
        f.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int32,
                      ctypes.c_void_p, ctypes.c_void_p]
        funcs[ours] = f
    return funcs


def keys() -> list[bytes]:
    rng = random.Random(7)
    out = [str(u).encode() for u in list(range(2000)) + [2 ** 63 - 1]]
    out += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))) for _ in range(2000)]
    return out


@pytest.mark.parametrize("name", sorted(PARTITIONERS))
def test_equal_to_librdkafka(name):
    theirs = _librdkafka()[name]
    ours = PARTITIONERS[name]
    for n in (1, 2, 3, 6, 8, 13, 100):
        for k in keys():
            assert ours(k, n) == theirs(None, k, len(k), n, None, None), (name, k, n)


def test_murmur2_equal_to_aiokafka():
    for k in keys():
        assert murmur2(k) == aiokafka_murmur2(k) & 0xFFFFFFFF


def _arrivals(partitioner, users, n):
    return [(str(u).encode(), partitioner(str(u).encode(), n)) for u in users]


def test_check_names_the_partitioner_the_keys_fit():
    check = PartitionCheck("murmur2", 4)
    verdicts = []
    for key, p in _arrivals(crc32_partition, range(1, 400), 4):
        if p != check.expected(key):
            assert check.off(key, p)            # crc32 explains it
        v = check.new_verdict()
        if v:
            verdicts.append(v)
    assert [sorted(v.fits) for v in verdicts] == [["crc32"]]
    assert "set kafka.partitioner: crc32" in describe(verdicts[0], "murmur2")
    assert check.fits == ["crc32"]


def test_check_sees_nothing_when_the_setting_matches():
    check = PartitionCheck("crc32", 2)
    assert all(check.expected(k) == p for k, p in _arrivals(crc32_partition, range(500), 2))
    assert check.new_verdict() is None and check.fits is None


def test_check_tells_when_keys_are_ignored():
    rng = random.Random(3)
    check = PartitionCheck("murmur2", 2)
    unexplained = 0
    verdict = None
    for u in range(200):
        key, p = str(u).encode(), rng.randrange(2)     # librdkafka's random
        if p != check.expected(key):
            unexplained += not check.off(key, p)
        verdict = check.new_verdict() or verdict
    assert unexplained > 0
    assert verdict is not None and verdict.keys_ignored
    assert "ignores keys" in describe(verdict, "murmur2")


def test_expected_is_cached_and_bounded():
    check = PartitionCheck("murmur2", 8)
    assert check.expected(b"42") == murmur2_partition(b"42", 8)
    assert check._expected == {  # noqa: SLF001 (the cache of expected partitions)
        b"42": murmur2_partition(b"42", 8)}
    with pytest.raises(ValueError, match="unknown partitioner"):
        PartitionCheck("md5", 8)
