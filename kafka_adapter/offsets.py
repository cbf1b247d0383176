"""Exact end offsets, consumer-group lag, and a group's start offsets at a time (replay).

The embedded broker (tansu 0.6) reports a partition's high watermark as the base offset of its last
record batch plus one, short of the true end when that batch holds several records. Reading the tail
batch gives the exact end; against Apache Kafka the tail read returns the last record and agrees with
the watermark.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from confluent_kafka import OFFSET_INVALID, Consumer, ConsumerGroupTopicPartitions, KafkaError, TopicPartition

from kafka_adapter.clients import admin, consumer, record_of

Partition = tuple[str, int]


def offsets_consumer(bootstrap: str, group: str = "reaseq-offsets") -> Consumer:
    return consumer(bootstrap, group, {"enable.partition.eof": True})


def list_partitions(bootstrap: str, topics: Iterable[str]) -> list[Partition]:
    """Every partition of those of ``topics`` that exist."""
    consumer = offsets_consumer(bootstrap)
    try:
        metadata = consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()
    return [(t, p) for t in topics if t in metadata for p in sorted(metadata[t].partitions)]


def exact_end_offsets(
    bootstrap: str, partitions: Iterable[Partition], timeout_s: float = 10.0
) -> dict[Partition, tuple[int, int]]:
    """(low, end) per partition, where end is one past the last record."""
    consumer = offsets_consumer(bootstrap)
    try:
        result: dict[Partition, tuple[int, int]] = {}
        tails: dict[Partition, int] = {}
        for topic, partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            result[(topic, partition)] = (low, high)
            if high > low:
                tails[(topic, partition)] = high - 1
        if tails:
            consumer.assign([TopicPartition(t, p, offset) for (t, p), offset in tails.items()])
            open_partitions = set(tails)
            while open_partitions:
                message = consumer.poll(timeout_s)
                if message is None:
                    break
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard((message.topic(), message.partition()))
                    continue
                record = record_of(message)
                low, end = result[(record.topic, record.partition)]
                result[(record.topic, record.partition)] = (low, max(end, record.offset + 1))
        return result
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, partitions: Iterable[Partition]) -> dict[Partition, int | None]:
    """The group's committed offset per partition; None where it has committed nothing."""
    consumer = offsets_consumer(bootstrap, group)
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {
            (tp.topic, tp.partition): (None if tp.offset == OFFSET_INVALID or tp.offset < 0 else tp.offset)
            for tp in committed
        }
    finally:
        consumer.close()


def group_lag(bootstrap: str, group: str, topics: Iterable[str]) -> dict[str, int]:
    """Records not yet processed by ``group``, per topic."""
    partitions = list_partitions(bootstrap, topics)
    ends = exact_end_offsets(bootstrap, partitions)
    committed = committed_offsets(bootstrap, group, partitions)
    lag: dict[str, int] = {}
    for where, (low, end) in ends.items():
        position = committed[where]
        lag[where[0]] = lag.get(where[0], 0) + end - (low if position is None else position)
    return lag


def commit_offsets_at(bootstrap: str, group: str, topics: Iterable[str], when: datetime) -> None:
    """Commit for ``group``, in every partition of ``topics``, the offset of the first record at or after ``when``
    (the partition's exact end where there is none), so that the group's members start there."""
    partitions = list_partitions(bootstrap, topics)
    stamp = int(when.timestamp() * 1000)
    reader = offsets_consumer(bootstrap)
    try:
        found = reader.offsets_for_times([TopicPartition(t, p, stamp) for t, p in partitions], timeout=10)
    finally:
        reader.close()
    ends = exact_end_offsets(bootstrap, partitions)
    offsets = [
        TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else ends[(tp.topic, tp.partition)][1])
        for tp in found
    ]
    client = admin(bootstrap)  # held until the futures resolve: a collected client never completes them
    for future in client.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)]).values():
        future.result()
