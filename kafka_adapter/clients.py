"""The one place where connection settings reach the Kafka clients: confluent-kafka here, aiokafka in
``kafka_adapter.aio_clients``, and Faust (its broker URL).

Every producer, consumer and admin client of the project is made here, so that a setting every client needs
(where the brokers are, and how to reach them) is added once. Callers pass only what their use needs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

__all__ = [
    "Config",
    "Consumer",
    "KafkaException",
    "Producer",
    "Record",
]  # types callers name without importing a client library
from confluent_kafka.admin import AdminClient

from reaseq.settings import Settings, get_settings

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


_LIBRDKAFKA_FILES = {"cafile": "ssl.ca.location", "certfile": "ssl.certificate.location", "keyfile": "ssl.key.location"}


def security_config(settings: Settings | None = None) -> dict[str, str]:
    """The librdkafka properties of the settings' TLS and SASL (the process's settings by default); none for
    PLAINTEXT. librdkafka does its own TLS, so nothing here imports ``ssl`` (the serving replica inside Triton
    cannot)."""
    s = settings or get_settings()
    if s.kafka_security_protocol == "PLAINTEXT":
        return {}
    config = {"security.protocol": s.kafka_security_protocol.lower()}
    if (login := s.kafka_sasl_login) is not None:
        config |= {"sasl.mechanisms": login.mechanism, "sasl.username": login.username, "sasl.password": login.password}
    return config | {_LIBRDKAFKA_FILES[role]: path for role, path in s.kafka_ssl_files.items()}


def _config(bootstrap: str, config: Config | None) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, **security_config(), **(config or {})}


def producer(bootstrap: str, config: Config | None = None) -> Producer:
    return Producer(_config(bootstrap, config))


def consumer(bootstrap: str, group: str, config: Config | None = None) -> Consumer:
    """A consumer that commits only when told (every reader here assigns, or commits what it has handled)."""
    return Consumer(_config(bootstrap, {"group.id": group, "enable.auto.commit": False, **(config or {})}))


def from_beginning(
    bootstrap: str, group: str, partitions: Iterable[tuple[str, int]], config: Config | None = None
) -> Consumer:
    """A consumer assigned ``partitions`` (topic, partition) from their beginning; it never joins ``group``."""
    reader = consumer(bootstrap, group, config)
    reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in partitions])
    return reader


def admin(bootstrap: str, config: Config | None = None) -> AdminClient:
    return AdminClient(_config(bootstrap, config))


def faust_broker_url(bootstrap: str, embedded: bool) -> str:
    """The broker URL a Faust app is given: Faust's aiokafka transport with stream partitions resumed after recovery's
    seek (``kafka_adapter.faust_transport``); for the embedded broker, also tansu's high watermarks corrected
    (``kafka_adapter.tansu_transport``)."""
    return f"{'tansu' if embedded else 'reaseq-kafka'}://{bootstrap}"


def cluster_id(bootstrap: str, timeout_s: float = 10.0) -> str:
    """The id of the cluster answering at ``bootstrap`` (each start of the embedded broker has its own)."""
    return admin(bootstrap, {"log_level": 0}).list_topics(timeout=timeout_s).cluster_id or ""


def broker_replaced(bootstrap: str, expected: str, found: str) -> str:
    """What to tell an operator whose broker is no longer the cluster the deployment started with."""
    return (
        f"the broker at {bootstrap} is not the one this deployment started with (cluster {expected!r}, now {found!r}): "
        "its topics, and the state built from them, are gone (the embedded broker keeps them in memory). Restart the "
        "stack: `reaseq down`, then `reaseq up`, and publish again"
    )


def watch_cluster(
    bootstrap: str, expected: str, on_change: Callable[[str], None], interval_s: float = 5.0
) -> threading.Thread:
    """A daemon thread calling ``on_change`` with ``broker_replaced``'s message once the brokers at ``bootstrap`` answer
    as another cluster than ``expected`` (a broker that does not answer is waited for, not a change)."""

    client = admin(bootstrap, {"log_level": 0})  # one connection for the process's life, not one per look

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            try:
                found = client.list_topics(timeout=interval_s).cluster_id or ""
            except KafkaException:
                continue
            if found != expected:
                on_change(broker_replaced(bootstrap, expected, found))
                return

    thread = threading.Thread(target=watch, name="cluster-watch", daemon=True)
    thread.start()
    return thread


def is_tansu(bootstrap: str) -> bool:
    """True for tansu, whose high watermark is the base offset of the last batch plus one.

    Readers of end offsets correct for it: ``kafka_adapter.offsets`` for the CLI, ``kafka_adapter.tansu_transport``
    for Faust.
    """
    return cluster_id(bootstrap).startswith("tansu")


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


def _note_refusal(error: KafkaError, refusals: list[str]) -> None:
    if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):
        refusals.append(error.str())


def await_kafka(bootstrap: str, topics: Sequence[str] = (), retry_s: float = 5.0) -> str:
    """Block until ``bootstrap`` answers and ``topics`` exist, however long that takes; returns the cluster's id.

    Long-running processes start with it, so that one started before its broker (or before the topics are
    provisioned) waits and says why in an error every ``retry_s``, rather than exiting or crash-looping.
    """
    refusals: list[str] = []
    client = admin(bootstrap, {"log_level": 0, "error_cb": lambda error: _note_refusal(error, refusals)})
    waited = False
    while True:
        try:
            metadata = client.list_topics(timeout=retry_s)
        except KafkaException as exc:  # the metadata request itself waited retry_s
            client.poll(0)  # serves error_cb: a refused login is told apart from a broker that is not there
            if refusals:
                log.error(
                    "Kafka refused this client's credentials (REASEQ_KAFKA_SASL_* / REASEQ_KAFKA_SSL_*); waiting",
                    extra={"bootstrap": bootstrap, "error": refusals[-1]},
                )
                refusals.clear()
            else:
                log.error("Kafka not reachable; waiting for it", extra={"bootstrap": bootstrap, "error": str(exc)})
            waited = True
            continue
        missing = [topic for topic in topics if topic not in metadata.topics]
        if not missing:
            if waited:
                log.warning("Kafka reachable; starting", extra={"bootstrap": bootstrap})
            return metadata.cluster_id or ""
        log.error("topics missing; waiting for them (`reaseq provision`)", extra={"missing": missing})
        waited = True
        time.sleep(retry_s)
