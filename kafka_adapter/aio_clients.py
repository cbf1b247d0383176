"""The aiokafka clients of the asynchronous workers and the embedded broker's Faust transport, made with the same
connection settings as ``kafka_adapter.clients``. A module of their own: aiokafka imports ``ssl``, which Triton's
Python backend cannot load, and the serving replica inside Triton uses only ``kafka_adapter.clients``."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


def aio_consumer(bootstrap: str | list[str], *topics: str, **options: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, enable_auto_commit=False, **options)


def aio_producer(bootstrap: str | list[str], **options: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, **options)
