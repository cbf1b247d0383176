"""The control topic: which state generation serves. Replay switches it once a new generation caught up."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from kafka_adapter import clients
from reaseq.contracts import ControlRecord, utcnow
from reaseq.settings import Settings
from reaseq.topics import CONTROL, topic_name
from reaseq.wire import decode, encode

GENERATION_KEY = b"generation"


def read_generation(settings: Settings, bootstrap: str) -> ControlRecord | None:
    """The latest generation record, or None before the first replay (generation 1 serves)."""
    topic = topic_name(settings, CONTROL)
    consumer = clients.consumer(bootstrap, "reaseq-control-reader")
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        if high <= low:
            return None
        consumer.assign([TopicPartition(topic, 0, low)])
        latest: ControlRecord | None = None
        position = low
        while position < high:
            message = consumer.poll(5.0)
            if message is None:
                break
            if message.error() is not None:
                continue
            record = clients.record_of(message)
            position = record.offset + 1
            if record.key == GENERATION_KEY and record.value is not None:
                latest = decode(ControlRecord, record.value, settings.max_message_bytes)
        return latest
    finally:
        consumer.close()


def active_generation(settings: Settings, bootstrap: str) -> int:
    record = read_generation(settings, bootstrap)
    return record.generation if record else 1


def write_generation(settings: Settings, bootstrap: str, generation: int, from_timestamp_ms: int | None) -> None:
    record = ControlRecord(
        name="generation", generation=generation, from_timestamp_ms=from_timestamp_ms, updated_at=utcnow()
    )
    producer = clients.producer(bootstrap)
    producer.produce(topic_name(settings, CONTROL), key=GENERATION_KEY, value=encode(record))
    if producer.flush(10) != 0:
        raise RuntimeError("control record was not acknowledged by the broker")
