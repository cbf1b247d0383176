"""Debounced interest requests survive the stream worker: one deferred to the end of its quiet time is sent by the
restarted worker when the first was killed before sending it, and once, not twice, when a rebalance moves it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from reaseq.contracts import CatalogItem, Interaction, InteractionKind, InterestRequest
from reaseq.settings import Settings
from reaseq.topics import BY_USER, EVENTS, INTEREST_REQUESTS, ITEMS, USER_FEATURES, changelog_name, topic_name
from tests.conftest import Spawn
from tests.support import Record, TopicReader, send_contracts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings, quiet_s: float) -> Settings:
    """Each test's quiet time per user (``quiet_s``, parametrized)."""
    return settings.model_copy(update={"interest_debounce_s": quiet_s})


def versions_requested(records: list[Record], user: bytes) -> list[int]:
    return [InterestRequest.model_validate_json(r.value).history_version for r in records if r.key == user and r.value]


def click_for(settings: Settings) -> Callable[[list[str], int], None]:
    """Publishes the catalog's one item; the function returned clicks it for each user at T0 + ``seconds``."""
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    item = CatalogItem(item_id="i1", title="Red shoe", categories=["demo"], event_time=T0)
    send_contracts(bootstrap, topic_name(settings, ITEMS), [item], lambda m: m.item_id)

    def click(users: list[str], seconds: int) -> None:
        at = T0 + timedelta(seconds=seconds)
        clicks = [Interaction(user_id=user, item_id="i1", kind=InteractionKind.CLICK, event_time=at) for user in users]
        send_contracts(bootstrap, topic_name(settings, EVENTS), clicks, lambda m: m.user_id)

    return click


# A quiet time far longer than the test: a trailing request can only come from the restarted worker.
@pytest.mark.parametrize("quiet_s", [3600.0])
def test_a_deferred_interest_request_is_sent_after_the_worker_is_killed(settings: Settings, workers: Spawn) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    click = click_for(settings)
    requests = TopicReader(bootstrap, topic_name(settings, INTEREST_REQUESTS))
    due = TopicReader(bootstrap, changelog_name(settings, "interest-due", 1))
    victim = workers("w0")
    click(["u1"], 10)
    requests.wait_for(lambda rs: versions_requested(rs, b"u1") == [1], timeout_s=120)  # the leading edge: at once
    click(["u1"], 20)
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


# Longer than a second worker takes to start and join, shorter than the test is willing to wait.
@pytest.mark.parametrize("quiet_s", [40.0])
def test_a_rebalance_sends_each_deferred_interest_request_once(
    settings: Settings, workers: Spawn, quiet_s: float
) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    click = click_for(settings)
    users = [f"u{n}" for n in range(8)]  # spread over the partitions: some stay with the first worker, some move
    requests = TopicReader(bootstrap, topic_name(settings, INTEREST_REQUESTS))
    due = TopicReader(bootstrap, changelog_name(settings, "interest-due", 1))
    workers("w0")
    clicked_at = time.monotonic()
    click(users, 10)
    requests.wait_for(lambda rs: all(versions_requested(rs, u.encode()) == [1] for u in users), timeout_s=120)
    leading_by = time.monotonic()  # the first worker's timers come due a quiet time after its leading requests
    click(users, 20)
    due.wait_for(lambda rs: {r.key for r in rs if r.value == b"2"} == {u.encode() for u in users})

    workers("w1")  # joins the group: every partition is revoked, and each owner sends what its tables hold due
    requests.wait_for(lambda rs: all(versions_requested(rs, u.encode()) == [1, 2] for u in users), timeout_s=quiet_s)
    assert time.monotonic() - clicked_at < quiet_s  # sent after the rebalance, before any of those timers came due
    requests.poll(leading_by + quiet_s * 1.25 + 2.0 - time.monotonic())  # past them, at the timer's interval
    assert {u: versions_requested(requests.records, u.encode()) for u in users} == {u: [1, 2] for u in users}
