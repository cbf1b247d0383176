"""Faust transport for the embedded broker (``tansu://`` URLs): exact high watermarks, short fetch waits.

tansu reports a partition's high watermark as the base offset of its last record batch plus one
(see infra.broker). Faust's table recovery reads up to that watermark and refuses to start when a
table's persisted changelog offset lies beyond it. This transport reads the tail batch to find the
true end, so workers can batch normally against tansu.

tansu also answers an idle fetch only after about half its maximum wait, not when data arrives, and
Faust fixes that wait at 1.5 s: every hop between agents would add up to 0.75 s. The worker's consumer
here waits at most ``FETCH_MAX_WAIT_MS``. Against Apache Kafka use ``reaseq-kafka://`` (``kafka_adapter.faust_transport``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from kafka_adapter import faust_transport
from kafka_adapter.aio_clients import aio_consumer

TAIL_READ_TIMEOUT_S = 10.0
FETCH_MAX_WAIT_MS = 100


async def exact_ends(bootstrap_servers: list[str], reported: Mapping[TP, int]) -> dict[TP, int]:
    """True end offsets, given the broker's (possibly short) high watermarks."""
    ends = dict(reported)
    tails = {tp: end - 1 for tp, end in reported.items() if end and end > 0}
    if not tails:
        return ends
    consumer = aio_consumer(bootstrap_servers, group_id=None)
    await consumer.start()
    try:
        consumer.assign(list(tails))
        for tp, offset in tails.items():
            consumer.seek(tp, offset)
        pending = set(tails)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TAIL_READ_TIMEOUT_S
        while pending and loop.time() < deadline:
            for tp, records in (await consumer.getmany(*pending, timeout_ms=500)).items():
                if records:
                    key = TP(tp.topic, tp.partition)
                    ends[key] = max(ends[key], records[-1].offset + 1)
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"could not read the tail of {sorted(pending)} to find its end offset")
        return ends
    finally:
        await consumer.stop()


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka (pinned) hands this to its fetcher at start(); Faust offers no setting for it.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        reported = await super()._highwaters(partitions)
        servers = faust_aiokafka.server_list(self.transport.url, self.transport.default_port)  # type: ignore[attr-defined]  # declared by faust's Transport, not TransportT
        return await exact_ends(servers, reported)


class Consumer(faust_transport.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_transport.Transport):
    Consumer = Consumer
