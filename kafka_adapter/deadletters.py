"""The one way a record reaches the dead-letter topic: logged, and sent byte for byte with why and where in its
headers (the record format is ``reaseq.deadletters``).

Each client sends in its own way (Faust's topic, an aiokafka or a confluent-kafka producer), so the caller passes
its ``Send``. Counting (``reaseq_dead_letters_total``) is the exporting process's: the serving replica inside
Triton exports no metrics, and prometheus_client imports ``ssl``, which Triton's Python backend cannot load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Producer

from reaseq.deadletters import DeadLetter, Headers
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, topic_name

log = logging.getLogger(__name__)

T = TypeVar("T")
Send = Callable[[str, bytes | None, bytes | None, Headers], T]  # (topic, key, value, headers) -> the client's result


def send_dead_letter(settings: Settings, letter: DeadLetter, send: Send[T]) -> T:
    """Log ``letter``, then send it to the dead-letter topic; returns what ``send`` returns (an awaitable
    for the asynchronous clients)."""
    log.warning(
        "record dead-lettered",
        extra={
            "agent": letter.agent,
            "reason": letter.reason.value,
            "topic": letter.source_topic,
            "offset": letter.source_offset,
            "detail": letter.detail[:300],
        },
    )
    return send(topic_name(settings, DEAD_LETTERS), letter.key, letter.value, letter.headers())


def producer_send(producer: Producer) -> Send[None]:
    """A confluent-kafka producer's ``Send`` (delivery is the caller's ``flush``)."""

    def send(topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        values: list[tuple[str, str | bytes | None]] = list(headers)
        producer.produce(topic, key=key, value=value, headers=values)
        producer.poll(0)

    return send
