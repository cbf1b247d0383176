"""What every asynchronous worker shares: a consumer-group loop over a request topic, a local result index
rebuilt from the compacted topic it publishes, and dead-lettering.

A worker fetches a batch, handles it (publishing its results and dead letters, awaited), and only then commits:
a crash re-runs the batch, never skips it. ``max_poll_interval_ms`` is long because a batch may be held while a
dependency is down; it is held, not abandoned.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from rocksdict import Options, Rdict

from models.datasets import read_topics
from reaseq.contracts import DeadLetterReason
from reaseq.deadletters import DeadLetter
from reaseq.metrics import DEAD_LETTERED, EVENTS_PROCESSED, QUEUE_DEPTH
from reaseq.settings import Settings
from reaseq.topics import DEAD_LETTERS, TopicSpec, topic_name
from reaseq.wire import M, decode_valid

log = logging.getLogger(__name__)

BatchHandler = Callable[[list[ConsumerRecord], AIOKafkaProducer], Awaitable[None]]
_BOOTSTRAPPED = b"\x00bootstrapped"


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
    consumer = AIOKafkaConsumer(
        topic_name(settings, requests),
        bootstrap_servers=bootstrap,
        group_id=settings.worker_group(agent),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_interval_ms=3_600_000,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        rebalance_timeout_ms=int(settings.rebalance_timeout_s * 1000),
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=settings.producer_linger_ms)
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


def dead_letter(
    settings: Settings,
    producer: AIOKafkaProducer,
    record: ConsumerRecord,
    reason: DeadLetterReason,
    detail: str,
    agent: str,
) -> Awaitable[object]:
    """Send ``record`` byte for byte to the dead-letter topic with the reason in its headers; await the result."""
    log.warning("request dead-lettered", extra={"agent": agent, "reason": reason.value, "detail": detail[:300]})
    DEAD_LETTERED.labels(agent, reason.value).inc()
    letter = DeadLetter(reason, detail, record.topic, record.partition, record.offset, agent, record.key, record.value)
    return producer.send_and_wait(topic_name(settings, DEAD_LETTERS), record.value, key=record.key, headers=letter.headers())


def run_until_signalled(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run ``main(stop)`` in a new event loop; SIGTERM and SIGINT set ``stop`` so the current batch finishes."""

    async def wrapper() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(wrapper())


class LocalIndex:
    """A worker's local RocksDB map from a key to what it last published for it (a fingerprint or the result).

    When the folder is new it is rebuilt from the compacted topic the worker publishes, so a worker on a fresh
    disk does not redo work that is already published.
    """

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), Options(raw_mode=True))

    def get(self, key: str) -> bytes | None:
        return self.db.get(key.encode())

    def put(self, key: str, value: bytes) -> None:
        self.db[key.encode()] = value

    def bootstrap(
        self, settings: Settings, bootstrap: str, topic: TopicSpec, model: type[M], entry: Callable[[M], tuple[str, bytes]]
    ) -> int:
        """When the index is new, fill it from ``topic``: ``entry`` maps each valid record to (key, stored value)."""
        if self.db.get(_BOOTSTRAPPED) is not None:
            return 0
        name = topic_name(settings, topic)
        count = 0
        for record in decode_valid(model, read_topics(bootstrap, [name], timeout_s=60)[name], settings.max_message_bytes):
            self.put(*entry(record))
            count += 1
        self.db[_BOOTSTRAPPED] = b"1"
        return count

    def close(self) -> None:
        self.db.close()
