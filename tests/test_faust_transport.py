"""The stream worker's consumer fetches no stream record between recovery's resume of the stream partitions and its
seek to the committed offsets (records fetched then were marked read, emptied from the queues, and never applied)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import faust
import pytest
from faust.types import TP

from kafka_adapter.faust_transport import Consumer


@pytest.fixture
def consumer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Consumer:
    app = faust.App("t", broker="reaseq-kafka://127.0.0.1:1", store="memory://", datadir=str(tmp_path))
    app.Table("histories", default=None, partitions=1)
    made = app.consumer
    assert isinstance(made, Consumer)
    monkeypatch.setattr(made, "assignment", set)  # nothing assigned yet: every partition starts paused

    async def no_commits() -> dict[TP, int]:
        return {}

    monkeypatch.setattr(made, "seek_to_committed", no_commits)
    return made


STREAM, CHANGELOG = TP("events", 0), TP("t-histories-changelog", 0)


def fetched(consumer: Consumer) -> set[TP]:
    return set(consumer._get_active_partitions())


def test_stream_partitions_wait_for_the_seek_and_the_resumed_flow(consumer: Consumer) -> None:
    consumer.resume_partitions({STREAM, CHANGELOG})
    assert fetched(consumer) == {CHANGELOG}  # recovery reads the changelogs at once
    consumer.resume_flow()  # recovery resumes the flow to read them: still no stream record
    assert fetched(consumer) == {CHANGELOG}
    asyncio.run(consumer.perform_seek())
    assert fetched(consumer) == {CHANGELOG}  # sought, but the queues are emptied only when the flow resumes
    consumer.resume_flow()
    assert fetched(consumer) == {CHANGELOG, STREAM}


def test_a_rebalance_before_the_seek_forgets_the_held_partitions(consumer: Consumer) -> None:
    consumer.resume_partitions({STREAM})
    consumer.pause_partitions({STREAM})  # the next rebalance pauses everything again
    asyncio.run(consumer.perform_seek())
    consumer.resume_flow()
    assert fetched(consumer) == set()
