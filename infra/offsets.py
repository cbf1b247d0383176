"""Exact end offsets and consumer-group lag.

The embedded broker (tansu 0.6) reports a partition's high watermark as the base offset of its last
record batch plus one, short of the true end when that batch holds several records. Reading the tail
batch gives the exact end; against Apache Kafka the tail read returns the last record and agrees with
the watermark.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, TopicPartition

Partition = tuple[str, int]


def offsets_consumer(bootstrap: str, group: str = "reaseq-offsets") -> Consumer:
    return Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "enable.partition.eof": True}
    )


def list_partitions(bootstrap: str, topics: Iterable[str]) -> list[Partition]:
    """Every partition of those of ``topics`` that exist."""
    consumer = offsets_consumer(bootstrap)
    try:
        metadata = consumer.list_topics(timeout=10).topics
    finally:
        consumer.close()
    return [(t, p) for t in topics if t in metadata for p in sorted(metadata[t].partitions)]


def exact_end_offsets(bootstrap: str, partitions: Iterable[Partition], timeout_s: float = 10.0) -> dict[Partition, tuple[int, int]]:
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
                where = (message.topic(), message.partition())
                if message.error() is not None:
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(where)
                    continue
                low, end = result[where]
                result[where] = (low, max(end, message.offset() + 1))
        return result
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, partitions: Iterable[Partition]) -> dict[Partition, int | None]:
    """The group's committed offset per partition; None where it has committed nothing."""
    consumer = offsets_consumer(bootstrap, group)
    try:
        committed = consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): (None if tp.offset == OFFSET_INVALID or tp.offset < 0 else tp.offset) for tp in committed}
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
