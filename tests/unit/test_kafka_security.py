"""kafka.security: validated, turned into aiokafka and Faust settings; the password only from the
environment."""
from __future__ import annotations

import ssl

import pytest

from features.config import ConfigError, parse_config
from streams.kafka_security import SecurityError, client_kwargs, faust_credentials


def cfg(**security):
    return parse_config({"kafka": {"broker": "kafka://k1:9093", "security": security}}, env={})


def test_plaintext_adds_nothing():
    c = cfg()
    assert client_kwargs(c) == {} and faust_credentials(c) is None


def test_sasl_ssl(monkeypatch):
    c = cfg(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="profiles",
            sasl_password_env="KAFKA_PW")
    monkeypatch.delenv("KAFKA_PW", raising=False)
    with pytest.raises(SecurityError, match=r"\$KAFKA_PW"):
        client_kwargs(c)
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    kw = client_kwargs(c)
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "profiles" and kw["sasl_plain_password"] == "s3cret"
    assert isinstance(kw["ssl_context"], ssl.SSLContext) and kw["ssl_context"].check_hostname
    creds = faust_credentials(c)
    assert creds.username == "profiles" and creds.password == "s3cret"


def test_ssl_only_and_checks():
    kw = client_kwargs(cfg(protocol="SSL", ssl_check_hostname=False))
    assert kw["security_protocol"] == "SSL" and not kw["ssl_context"].check_hostname
    assert "sasl_plain_username" not in kw
    with pytest.raises(ConfigError, match="sasl_username is required"):
        cfg(protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="ssl_certfile and ssl_keyfile go together"):
        cfg(protocol="SSL", ssl_certfile="c.pem")
    with pytest.raises(ConfigError, match="protocol"):
        cfg(protocol="KERBEROS")
