"""A consumer-group loop over a request topic, in batches, for the asynchronous workers.

A worker fetches a batch, handles it (publishing its results and dead letters, awaited), and only then commits: a
crash re-runs the batch, never skips it. ``max_poll_interval_ms`` is long because a batch may be held while a
dependency is down; it is held, not abandoned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from kafka_adapter.aio_clients import aio_consumer, aio_producer
from kafka_adapter.deadletters import Send
from reaseq.metrics import EVENTS_PROCESSED, QUEUE_DEPTH
from reaseq.settings import Settings
from reaseq.topics import TopicSpec, topic_name

Record: TypeAlias = ConsumerRecord[bytes, bytes]  # one fetched record: topic, partition, offset, key, value
AsyncProducer: TypeAlias = AIOKafkaProducer

BatchHandler = Callable[[list[Record], AsyncProducer], Awaitable[None]]


async def consume_batches(
    settings: Settings,
    bootstrap: str,
    agent: str,
    requests: TopicSpec,
    batch_size: int,
    handle: BatchHandler,
    stop: asyncio.Event,
) -> None:
    """As ``agent`` (its consumer group), fetch up to ``batch_size`` records, ``handle`` them, commit; until ``stop``
    is set. Counts the records handled and keeps the topic's lag in ``reaseq_queue_depth``."""
    consumer = aio_consumer(
        bootstrap,
        topic_name(settings, requests),
        group_id=settings.worker_group(agent),
        auto_offset_reset="earliest",
        max_poll_interval_ms=3_600_000,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
    )
    producer = aio_producer(bootstrap, linger_ms=settings.producer_linger_ms)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=batch_size)
            records = [record for batch in batches.values() for record in batch]
            if records:
                await handle(records, producer)
                await consumer.commit({tp: batch[-1].offset + 1 for tp, batch in batches.items()})
                EVENTS_PROCESSED.labels(agent).inc(len(records))
            QUEUE_DEPTH.labels(requests.name).set(sum([await _lag(consumer, tp) for tp in consumer.assignment()]))
    finally:
        await consumer.stop()
        await producer.stop()


async def _lag(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    """Records of ``tp`` beyond this member's position; 0 until a fetch has reported the partition's end.

    The embedded broker reports the end as the base offset of the last record batch plus one, so there the lag
    reads low while a batch's records wait (never on Apache Kafka).
    """
    end = consumer.highwater(tp)
    return 0 if end is None else max(0, end - await consumer.position(tp))


def aio_producer_send(producer: AIOKafkaProducer) -> Send[Awaitable[object]]:
    """An aiokafka producer's ``Send``: await the result to know the broker has the record."""
    return lambda topic, key, value, headers: producer.send_and_wait(topic, value, key=key, headers=headers)
