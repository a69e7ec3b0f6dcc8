"""kafka.security: validated, turned into aiokafka and Faust settings; the password only from the
environment."""
from __future__ import annotations

import ssl

import pytest

from features.config import ConfigError, parse_config
from streams.io.kafka_security import (
    SecurityError,
    client_kwargs,
    faust_credentials,
    librdkafka_settings,
)


def cfg(**security):
    return parse_config({"kafka": {"broker": "kafka://k1:9093", "security": security}}, env={})


def test_plaintext_adds_nothing():
    c = cfg()
    assert client_kwargs(c) == {} and faust_credentials(c) is None
    assert librdkafka_settings(c) == {}


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


def test_the_same_settings_in_librdkafka_names(monkeypatch, tmp_path):
    """The output producer (librdkafka) gets what the aiokafka clients get."""
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    c = parse_config({"kafka": {"broker": "kafka://k1:9093", "security": {
        "protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "profiles",
        "sasl_password_env": "KAFKA_PW", "ssl_cafile": "ca.pem", "ssl_certfile": "c.pem",
        "ssl_keyfile": "k.pem"}}}, base_dir=tmp_path, env={})
    assert librdkafka_settings(c) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "profiles", "sasl.password": "s3cret",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "c.pem"),
        "ssl.key.location": str(tmp_path / "k.pem"),
        "ssl.endpoint.identification.algorithm": "https"}
    plain = librdkafka_settings(cfg(protocol="SSL", ssl_check_hostname=False))
    assert plain == {"security.protocol": "SSL", "ssl.ca.location": "probe",
                     "ssl.endpoint.identification.algorithm": "none"}
    import confluent_kafka  # librdkafka accepts every name and value
    confluent_kafka.Producer({"bootstrap.servers": "k1:9093", **plain})
