"""Debounced interest requests survive the stream worker: one deferred to the end of its quiet time is sent by the
restarted worker when the first was killed before sending it."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta, timezone

import pytest

from reaseq.contracts import CatalogItem, Interaction, InteractionKind, InterestRequest
from reaseq.settings import Settings
from reaseq.topics import BY_USER, EVENTS, INTEREST_REQUESTS, ITEMS, USER_FEATURES, changelog_name, topic_name
from tests.conftest import Spawn
from tests.support import Record, TopicReader, send_contracts

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A quiet time far longer than the test: a trailing request can only come from the restarted worker."""
    return settings.model_copy(update={"interest_debounce_s": 3600.0})


def versions_requested(records: list[Record], user: bytes) -> list[int]:
    return [InterestRequest.model_validate_json(r.value).history_version for r in records if r.key == user and r.value]


def test_a_deferred_interest_request_is_sent_after_the_worker_is_killed(settings: Settings, workers: Spawn) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    item = CatalogItem(item_id="i1", title="Red shoe", categories=["demo"], event_time=T0)
    send_contracts(bootstrap, topic_name(settings, ITEMS), [item], lambda m: m.item_id)

    def click(seconds: int) -> None:
        interaction = Interaction(user_id="u1", item_id="i1", kind=InteractionKind.CLICK, event_time=T0 + timedelta(seconds=seconds))
        send_contracts(bootstrap, topic_name(settings, EVENTS), [interaction], lambda m: m.user_id)

    requests = TopicReader(bootstrap, topic_name(settings, INTEREST_REQUESTS))
    due = TopicReader(bootstrap, changelog_name(settings, "interest-due", 1))
    victim = workers("w0")
    click(10)
    requests.wait_for(lambda rs: versions_requested(rs, b"u1") == [1], timeout_s=120)  # the leading edge: at once
    click(20)
    due.wait_for(lambda rs: [(r.key, r.value) for r in rs] == [(b"u1", b"2")])  # deferred, and recorded as due
    by_user = TopicReader(bootstrap, topic_name(settings, BY_USER, 1)).wait_for(lambda rs: len(rs) == 2)
    assert {r.partition for r in by_user} == {due.records[0].partition}  # recovered by the user's owner
    TopicReader(bootstrap, topic_name(settings, USER_FEATURES)).wait_for(lambda rs: len(rs) == 2)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert versions_requested(requests.poll(1.0), b"u1") == [1]

    workers("w0")
    assert versions_requested(requests.wait_for(lambda rs: len(rs) == 2, timeout_s=120), b"u1") == [1, 2]
    due.wait_for(lambda rs: len(rs) == 2)
    assert due.records[-1].key == b"u1" and due.records[-1].value is None  # sent once: a later restart sends nothing
