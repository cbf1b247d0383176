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
    return create_ssl_context(**s.kafka_ssl_files) if s.kafka_uses_tls else None


def aiokafka_security(settings: Settings | None = None) -> dict[str, Any]:
    """aiokafka's options for the settings' TLS and SASL (the process's settings by default); none for PLAINTEXT."""
    s = settings or get_settings()
    if s.kafka_security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": s.kafka_security_protocol, "ssl_context": _ssl_context(s)}
    if (login := s.kafka_sasl_login) is not None:
        options |= {
            "sasl_mechanism": login.mechanism,
            "sasl_plain_username": login.username,
            "sasl_plain_password": login.password,
        }
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The stream app's broker credentials for the settings' TLS and SASL; None for PLAINTEXT."""
    context = _ssl_context(settings)
    if (login := settings.kafka_sasl_login) is not None:
        return SASLCredentials(
            username=login.username, password=login.password, ssl_context=context, mechanism=login.mechanism
        )
    return SSLCredentials(context) if context is not None else None


def aio_consumer(bootstrap: str | list[str], *topics: str, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, enable_auto_commit=False, **aiokafka_security(), **options
    )


def aio_producer(bootstrap: str | list[str], **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **aiokafka_security(), **options)
