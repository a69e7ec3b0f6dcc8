"""`kafka.security` turned into client settings: keyword arguments for every aiokafka client, the
settings of librdkafka (the output producer) and the credentials of the Faust app. The SASL
password comes from an environment variable."""
from __future__ import annotations

import os
import ssl
from typing import Any, cast

from features.config import KafkaSecurityConfig, ProfileConfig


class SecurityError(RuntimeError):
    pass


def _password(sec: KafkaSecurityConfig) -> str:
    pw = os.environ.get(sec.sasl_password_env)
    if not pw:
        raise SecurityError(f"kafka.security: set the SASL password in ${sec.sasl_password_env}")
    return pw


def ssl_context(cfg: ProfileConfig) -> ssl.SSLContext | None:
    sec = cfg.kafka.security
    if "SSL" not in sec.protocol:
        return None
    ctx = ssl.create_default_context(cafile=cfg.path(sec.ssl_cafile) if sec.ssl_cafile
                                     else None)
    ctx.check_hostname = sec.ssl_check_hostname
    if sec.ssl_certfile:
        # the config validates that ssl_keyfile comes with ssl_certfile
        ctx.load_cert_chain(cfg.path(sec.ssl_certfile), cfg.path(cast(str, sec.ssl_keyfile)))
    return ctx


def client_kwargs(cfg: ProfileConfig) -> dict[str, Any]:
    """For AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
    sec = cfg.kafka.security
    if sec.protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": sec.protocol}
    ctx = ssl_context(cfg)
    if ctx is not None:
        out["ssl_context"] = ctx
    if sec.protocol.startswith("SASL"):
        out.update(sasl_mechanism=sec.sasl_mechanism, sasl_plain_username=sec.sasl_username,
                   sasl_plain_password=_password(sec))
    return out


def librdkafka_settings(cfg: ProfileConfig) -> dict[str, Any]:
    """The same settings in librdkafka's names (confluent-kafka's Producer)."""
    sec = cfg.kafka.security
    if sec.protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security.protocol": sec.protocol}
    if "SSL" in sec.protocol:
        # no CA file: the system's CAs, as ssl.create_default_context() uses
        out["ssl.ca.location"] = str(cfg.path(sec.ssl_cafile)) if sec.ssl_cafile else "probe"
        out["ssl.endpoint.identification.algorithm"] = \
            "https" if sec.ssl_check_hostname else "none"
        if sec.ssl_certfile:
            out["ssl.certificate.location"] = str(cfg.path(sec.ssl_certfile))
            out["ssl.key.location"] = str(cfg.path(cast(str, sec.ssl_keyfile)))  # with certfile
    if sec.protocol.startswith("SASL"):
        out.update({"sasl.mechanism": sec.sasl_mechanism, "sasl.username": sec.sasl_username,
                    "sasl.password": _password(sec)})
    return out


def faust_credentials(cfg: ProfileConfig):
    """The Faust app's `broker_credentials` (None for PLAINTEXT)."""
    import faust
    sec = cfg.kafka.security
    if sec.protocol == "PLAINTEXT":
        return None
    if sec.protocol == "SSL":
        return faust.SSLCredentials(ssl_context(cfg))
    return faust.SASLCredentials(username=sec.sasl_username, password=_password(sec),
                                 ssl_context=ssl_context(cfg), mechanism=sec.sasl_mechanism)
