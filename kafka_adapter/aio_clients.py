"""The aiokafka clients of the asynchronous workers and the stream app's Faust credentials, made with the same
connection settings as ``kafka_adapter.clients``. A module of their own: aiokafka imports ``ssl``, which Triton's
Python backend cannot load, and the serving replica inside Triton uses only ``kafka_adapter.clients``."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from reaseq.settings import Settings, get_settings


def _ssl_context(s: Settings) -> ssl.SSLContext | None:
    if not s.kafka_security_protocol.endswith("SSL"):
        return None
    return create_ssl_context(
        cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None,
        certfile=str(s.kafka_ssl_certfile) if s.kafka_ssl_certfile else None,
        keyfile=str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None,
    )


def aiokafka_security(settings: Settings | None = None) -> dict[str, Any]:
    """aiokafka's options for the settings' TLS and SASL (the process's settings by default); none for PLAINTEXT."""
    s = settings or get_settings()
    if s.kafka_security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": s.kafka_security_protocol, "ssl_context": _ssl_context(s)}
    if s.kafka_security_protocol.startswith("SASL"):
        assert s.kafka_sasl_password is not None  # the settings check it
        options |= {
            "sasl_mechanism": s.kafka_sasl_mechanism,
            "sasl_plain_username": s.kafka_sasl_username,
            "sasl_plain_password": s.kafka_sasl_password.get_secret_value(),
        }
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The stream app's broker credentials for the settings' TLS and SASL; None for PLAINTEXT."""
    context = _ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # the settings check it
        return SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    return SSLCredentials(context) if context is not None else None


def aio_consumer(bootstrap: str | list[str], *topics: str, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, enable_auto_commit=False, **aiokafka_security(), **options
    )


def aio_producer(bootstrap: str | list[str], **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **aiokafka_security(), **options)
