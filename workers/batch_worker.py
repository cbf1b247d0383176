"""What every asynchronous worker shares beside its request loop (``kafka_adapter.batches``): a local result index
rebuilt from the compacted topic it publishes, dead-lettering, and running until signalled."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from kafka_adapter.batches import AsyncProducer, Record, aio_producer_send
from kafka_adapter.clients import Record as FollowedRecord
from kafka_adapter.deadletters import send_dead_letter
from kafka_adapter.follower import Follower
from reaseq.contracts import DeadLetterReason
from reaseq.deadletters import DeadLetter
from reaseq.metrics import DEAD_LETTERED
from reaseq.settings import Settings
from reaseq.wire import ContractError, M, decode


def dead_letter(
    settings: Settings, producer: AsyncProducer, record: Record, reason: DeadLetterReason, detail: str, agent: str
) -> Awaitable[object]:
    """Send ``record`` byte for byte to the dead-letter topic with the reason in its headers; await the result."""
    letter = DeadLetter(reason, detail, record.topic, record.partition, record.offset, agent, record.key, record.value)
    DEAD_LETTERED.labels(agent, reason.value).inc()
    return send_dead_letter(settings, letter, aio_producer_send(producer))


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

    A new folder is first rebuilt from the compacted topic the worker publishes (``bootstrap``), so a worker on a
    fresh disk does not redo work that is already published.
    """

    def __init__(self, path: Path, bootstrap: str, topic: str) -> None:
        self.follower = Follower(path, bootstrap, [topic])

    def get(self, key: str) -> bytes | None:
        return self.follower.get(key.encode())

    def put(self, key: str, value: bytes) -> None:
        self.follower.put(key.encode(), value)

    def bootstrap(self, settings: Settings, model: type[M], entry: Callable[[M], tuple[str, bytes]]) -> int:
        """When the index is new, fill it from its topic: ``entry`` maps each valid record to (key, stored value)."""
        if self.follower.positions():
            return 0

        def entries(message: FollowedRecord) -> dict[bytes, bytes | None]:
            value = message.value
            if value is None:
                return {}
            try:
                key, stored = entry(decode(model, value, settings.max_message_bytes))
            except ContractError:  # written by this worker's kind; a bad one was never an answer to keep
                return {}
            return {key.encode(): stored}

        return self.follower.catch_up(entries)

    def close(self) -> None:
        self.follower.close()
