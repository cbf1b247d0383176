"""Faust's aiokafka transport with stream partitions resumed only after recovery's seek (``reaseq-kafka://``).

At the end of table recovery Faust (0.15) resumes the stream partitions, then seeks them to their committed
offsets, then resumes its flow control, which empties every stream queue. Records fetched meanwhile are handed to
the agents' queues and marked read, then emptied from the queues by the resume; after the seek their offsets are
behind the consumer's read offset, so the re-fetched copies are dropped as duplicates. Those records are never
processed: their effect is lost and the partition's commit stops at the first of them (seen with a stream worker
restarted beside a backlog: a few of 2,000 events never applied, hundreds left uncommitted). This consumer holds
the stream partitions back until the seek is done and the flow resumed, so the first records handed over are
those at the committed offsets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held: set[TP] = set()  # stream partitions to resume once the seek is done and the flow resumed
        self._sought = False
        super().__init__(*args, **kwargs)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        wanted = set(tps)
        streams = {tp for tp in wanted if not self._is_changelog_tp(tp)}
        super().resume_partitions(wanted - streams)  # changelogs: recovery reads them now
        if streams:
            self._held |= streams
            self._sought = False

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        paused = set(tps)
        super().pause_partitions(paused)
        self._held -= paused

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._sought = True

    def resume_flow(self) -> None:
        super().resume_flow()
        if self._held and self._sought:
            super().resume_partitions(self._held)
            self._held = set()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
