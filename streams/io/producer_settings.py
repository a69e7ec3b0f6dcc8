"""`kafka.client` and `kafka.security` turned into producer settings, for aiokafka (the CLI's
producers of events and items, the aiokafka output client) and for librdkafka (the output
producer). The Faust app takes the same values in streams.app."""
from __future__ import annotations

from typing import Any

from features.config import ProfileConfig
from streams.io.kafka_security import client_kwargs, librdkafka_settings


def aiokafka_producer_kwargs(cfg: ProfileConfig) -> dict[str, Any]:
    client = cfg.kafka.client
    # idempotence keeps a key's records in order through retries (profile-updates is read as
    # latest-wins); the broker requires acks=all for it
    return {"acks": client.acks, "linger_ms": client.linger_ms,
            "enable_idempotence": client.acks == "all", **client_kwargs(cfg)}


def librdkafka_producer_settings(cfg: ProfileConfig) -> dict[str, Any]:
    client = cfg.kafka.client
    # a record older than the delivery timeout is dropped, never sent: checked by librdkafka
    # before it sends, also when the process thaws (kafka.client.delivery_timeout_seconds)
    return {"acks": str(client.acks), "linger.ms": client.linger_ms,
            "enable.idempotence": client.acks == "all",
            "message.timeout.ms": client.delivery_timeout_ms(), **librdkafka_settings(cfg)}
