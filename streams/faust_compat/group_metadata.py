"""The consumer group metadata a transactional producer sends its offsets with (KIP-447), for a
member of a group that aiokafka (Faust's consumer) joined and a librdkafka producer
(confluent-kafka) commits for.

The broker fences a transaction's offsets by this metadata: an offset commit sent with a
generation the group has moved past is refused (ILLEGAL_GENERATION), so a worker that lost its
partitions cannot commit over their next owner's. confluent-kafka takes the metadata only as
librdkafka's serialized form (the bytes `Consumer.consumer_group_metadata()` returns, read back
by `rd_kafka_consumer_group_metadata_read`), and makes it only for its own consumer; aiokafka
keeps the generation and member id on its private coordinator. Both reaches are here, and
tests/integration/test_transactions.py holds the bytes equal to a confluent-kafka member's.

librdkafka 2.x's layout ("CGMDv2:"): the magic, the generation id (int32, host byte order),
the group id and the member id (each NUL-terminated), then one byte: 1 when the member has no
group instance id (no static membership, which the workers do not use).
"""
from __future__ import annotations

import struct
from typing import Any

MAGIC = b"CGMDv2:"
NO_INSTANCE_ID = b"\x01"
GENERATION = struct.Struct("=i")     # int32 in host byte order


def librdkafka_group_metadata(group_id: str, generation: int, member_id: str) -> bytes:
    """The serialized metadata of a dynamic member `member_id` of `group_id` in `generation`."""
    for name, text in (("group id", group_id), ("member id", member_id)):
        if "\x00" in text:
            raise ValueError(f"the {name} {text!r} holds a NUL character")
    return b"".join((MAGIC, GENERATION.pack(generation),
                     group_id.encode() + b"\x00", member_id.encode() + b"\x00",
                     NO_INSTANCE_ID))


def parse_group_metadata(raw: bytes) -> tuple[int, str, str]:
    """(generation, group id, member id) of librdkafka's serialized metadata of a dynamic
    member; ValueError for anything else."""
    if not raw.startswith(MAGIC) or not raw.endswith(b"\x00" + NO_INSTANCE_ID):
        raise ValueError(f"not librdkafka's group metadata of a dynamic member: {raw[:40]!r}")
    (generation,) = GENERATION.unpack_from(raw, len(MAGIC))
    names = raw[len(MAGIC) + GENERATION.size:-2].split(b"\x00")
    if len(names) != 2:
        raise ValueError(f"not librdkafka's group metadata of a dynamic member: {raw[:40]!r}")
    return generation, names[0].decode(), names[1].decode()


def aiokafka_member(consumer: Any) -> tuple[int, str]:
    """(generation, member id) of an aiokafka consumer's membership, as its coordinator last
    had it (-1 and "" while it is not a member)."""
    coordinator = consumer._coordinator
    if coordinator is None:
        return -1, ""
    return int(coordinator.generation), str(coordinator.member_id)


def aiokafka_group_metadata(consumer: Any, group_id: str) -> bytes:
    """The serialized metadata of an aiokafka consumer's current membership of `group_id`."""
    generation, member_id = aiokafka_member(consumer)
    return librdkafka_group_metadata(group_id, generation, member_id)
