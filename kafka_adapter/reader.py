"""Reading whole topics once, from the beginning to their end (training from the topics)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from kafka_adapter.clients import consumer, record_of


def read_topics(bootstrap: str, topics: Sequence[str], timeout_s: float) -> dict[str, list[bytes | None]]:
    """Every record value of ``topics`` in partition order, read to the end without a consumer group."""
    # librdkafka wants a group.id even for assign(); nothing joins or commits with it.
    reader = consumer(bootstrap, "reaseq-reader", {"enable.partition.eof": True, "log_level": 0})
    try:
        metadata = reader.list_topics(timeout=timeout_s).topics
        missing = [t for t in topics if t not in metadata or metadata[t].error is not None]
        if missing:
            raise ValueError(f"topics not found: {missing}")
        assigned = [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in sorted(metadata[t].partitions)]
        reader.assign(assigned)
        pending = {(tp.topic, tp.partition) for tp in assigned}
        values: dict[str, list[bytes | None]] = {t: [] for t in topics}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"partitions not read to the end within {timeout_s}s: {sorted(pending)}")
            message = reader.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {message.topic()}: {error}")
                pending.discard((message.topic(), message.partition()))
                continue
            record = record_of(message)
            values[record.topic].append(record.value)
        return values
    finally:
        reader.close()
