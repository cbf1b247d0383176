"""The one place where connection settings reach the Kafka clients: confluent-kafka here, aiokafka in
``kafka_adapter.aio_clients``, and Faust (its broker URL).

Every producer, consumer and admin client of the project is made here, so that a setting every client needs
(where the brokers are, and how to reach them) is added once. Callers pass only what their use needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition

__all__ = [
    "Config",
    "Consumer",
    "KafkaException",
    "Producer",
    "Record",
]  # types callers name without importing a client library
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

Config = Mapping[str, Any]  # librdkafka properties, e.g. {"linger.ms": 5}


@dataclass(frozen=True)
class Record:
    """One record read; the fields of an aiokafka ``ConsumerRecord``, so both clients' records read alike."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def record_of(message: Message) -> Record:
    """A consumed confluent-kafka message (not an error) as a ``Record``."""
    topic, partition, offset = message.topic(), message.partition(), message.offset()
    assert topic is not None and partition is not None and offset is not None  # set on every consumed record
    return Record(topic, partition, offset, message.key(), message.value())


class BrokerError(RuntimeError):
    """Kafka did not answer, or the embedded broker could not be started."""


def producer(bootstrap: str, config: Config | None = None) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, **(config or {})})


def consumer(bootstrap: str, group: str, config: Config | None = None) -> Consumer:
    """A consumer that commits only when told (every reader here assigns, or commits what it has handled)."""
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, **(config or {})})


def from_beginning(
    bootstrap: str, group: str, partitions: Iterable[tuple[str, int]], config: Config | None = None
) -> Consumer:
    """A consumer assigned ``partitions`` (topic, partition) from their beginning; it never joins ``group``."""
    reader = consumer(bootstrap, group, config)
    reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in partitions])
    return reader


def admin(bootstrap: str, config: Config | None = None) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, **(config or {})})


def faust_broker_url(bootstrap: str, embedded: bool) -> str:
    """The broker URL a Faust app is given: the embedded broker's transport (``kafka_adapter.tansu_transport``)
    corrects tansu's high watermarks."""
    return f"{'tansu' if embedded else 'kafka'}://{bootstrap}"


def is_tansu(bootstrap: str) -> bool:
    """True for tansu, whose high watermark is the base offset of the last batch plus one.

    Readers of end offsets correct for it: ``kafka_adapter.offsets`` for the CLI, ``kafka_adapter.tansu_transport``
    for Faust.
    """
    cluster_id = admin(bootstrap).list_topics(timeout=10).cluster_id or ""
    return cluster_id.startswith("tansu")


def wait_until_answers(bootstrap: str, timeout_s: float = 30.0) -> None:
    """Block until a Kafka metadata request to ``bootstrap`` succeeds."""
    client = admin(bootstrap, {"log_level": 0})
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.list_topics(timeout=1.0)
            return
        except KafkaException as exc:  # a transient error while the broker starts
            last_error = exc
            time.sleep(0.1)
    raise BrokerError(f"Kafka at {bootstrap} did not answer within {timeout_s:.0f}s: {last_error}")


def await_kafka(bootstrap: str, topics: Sequence[str] = (), retry_s: float = 5.0) -> None:
    """Block until ``bootstrap`` answers and ``topics`` exist, however long that takes.

    Long-running processes start with it, so that one started before its broker (or before the topics are
    provisioned) waits and says why in an error every ``retry_s``, rather than exiting or crash-looping.
    """
    client = admin(bootstrap, {"log_level": 0})
    waited = False
    while True:
        try:
            existing = client.list_topics(timeout=retry_s).topics
        except KafkaException as exc:  # the metadata request itself waited retry_s
            log.error("Kafka not reachable; waiting for it", extra={"bootstrap": bootstrap, "error": str(exc)})
            waited = True
            continue
        missing = [topic for topic in topics if topic not in existing]
        if not missing:
            if waited:
                log.warning("Kafka reachable; starting", extra={"bootstrap": bootstrap})
            return
        log.error("topics missing; waiting for them (`reaseq provision`)", extra={"missing": missing})
        waited = True
        time.sleep(retry_s)
