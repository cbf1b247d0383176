"""The stream pipeline end to end: real broker, real Faust worker process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from reaseq.contracts import (
    CatalogItem,
    DeadLetterReason,
    EnrichmentRequest,
    Interaction,
    InteractionKind,
    InterestRequest,
    UserFeatureUpdate,
)
from reaseq.deadletters import DeadLetter
from reaseq.settings import Settings
from reaseq.topics import (
    DEAD_LETTERS,
    ENRICHMENT_REQUESTS,
    EVENTS,
    INTEREST_REQUESTS,
    ITEM_FEATURES,
    ITEMS,
    USER_FEATURES,
    topic_name,
)
from tests.conftest import Spawn
from tests.support import TopicReader, latest_by_key, send, send_contracts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with a small pending limit, so one test can overflow it."""
    return settings.model_copy(update={"pending_limit": 3})


def item(item_id: str, title: str, seconds: int = 0) -> CatalogItem:
    return CatalogItem(item_id=item_id, title=title, categories=["demo"], event_time=T0 + timedelta(seconds=seconds))


def click(user: str, item_id: str, seconds: int) -> Interaction:
    return Interaction(
        user_id=user, item_id=item_id, kind=InteractionKind.CLICK, event_time=T0 + timedelta(seconds=seconds)
    )


def test_topics_are_provisioned_with_their_policies(settings: Settings, workers: Spawn) -> None:
    assert settings.kafka_bootstrap
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    wanted = {topic_name(settings, ITEM_FEATURES): "compact", topic_name(settings, EVENTS): "delete"}
    resources = [ConfigResource("topic", name) for name in wanted]
    for resource, future in admin.describe_configs(resources).items():
        assert future.result()["cleanup.policy"].value == wanted[resource.name]
    assert len(admin.list_topics(timeout=10).topics[topic_name(settings, EVENTS)].partitions) == settings.partitions


def test_items_and_events_reach_state_and_outputs(settings: Settings, workers: Spawn) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap
    items_topic, events_topic = topic_name(settings, ITEMS), topic_name(settings, EVENTS)
    by_item = lambda m: m.item_id  # noqa: E731
    by_user = lambda m: m.user_id  # noqa: E731
    send_contracts(bootstrap, items_topic, [item("i1", "Red shoe"), item("i2", "Blue hat")], by_item)
    send_contracts(
        bootstrap,
        events_topic,
        [
            click("u1", "i1", 10),
            click("u1", "i3", 20),  # item not published yet: kept pending, resolved when it arrives
            click("u1", "i1", 10),  # redelivered duplicate: no second history entry
            click("u2", "i2", 15),
        ],
        by_user,
    )
    send_contracts(bootstrap, items_topic, [item("i1", "Red shoe", seconds=5)], by_item)  # unchanged: no re-enrichment
    send_contracts(bootstrap, items_topic, [item("i2", "Old blue hat", seconds=-5)], by_item)  # older version: ignored
    send(bootstrap, events_topic, [(b"u9", b"{broken"), (b"u9", orjson.dumps({"schema_version": 7}))])
    # Four interactions for an item that never arrives: the pending limit (3 in tests) keeps three.
    send_contracts(bootstrap, events_topic, [click("u3", "i404", s) for s in (1, 2, 3, 4)], by_user)
    workers("w0")

    users = TopicReader(bootstrap, topic_name(settings, USER_FEATURES))
    users.wait_for(lambda rs: len(latest_by_key(rs)) == 2)
    send_contracts(bootstrap, items_topic, [item("i3", "Green scarf", seconds=30)], by_item)

    def history(rs: list, user: bytes) -> list[str]:
        latest = latest_by_key(rs).get(user)
        return [e.item_id for e in UserFeatureUpdate.model_validate_json(latest).history] if latest else []

    records = users.wait_for(lambda rs: history(rs, b"u1") == ["i1", "i3"])
    assert history(records, b"u2") == ["i2"]
    u1 = UserFeatureUpdate.model_validate_json(latest_by_key(records)[b"u1"])
    assert u1.version == 2 and u1.as_of == T0 + timedelta(seconds=20)

    enrichment = TopicReader(bootstrap, topic_name(settings, ENRICHMENT_REQUESTS)).wait_for(lambda rs: len(rs) >= 3)
    requested = sorted(EnrichmentRequest.model_validate_json(r.value).item_id for r in enrichment)
    assert requested == ["i1", "i2", "i3"]  # one per distinct content, none for the unchanged or older copies
    features = latest_by_key(
        TopicReader(bootstrap, topic_name(settings, ITEM_FEATURES)).wait_for(lambda rs: len(rs) >= 3)
    )
    assert orjson.loads(features[b"i2"])["title"] == "Blue hat"

    interests = TopicReader(bootstrap, topic_name(settings, INTEREST_REQUESTS)).wait_for(
        lambda rs: any(InterestRequest.model_validate_json(r.value).history_version == 2 for r in rs if r.key == b"u1")
    )
    assert all(r.key in (b"u1", b"u2") for r in interests)

    dead = TopicReader(bootstrap, topic_name(settings, DEAD_LETTERS)).wait_for(lambda rs: len(rs) >= 3)
    letters = [DeadLetter.from_record(r.key, r.value, r.headers) for r in dead]
    rejected = [d for d in letters if d.agent == "ingest-events"]
    assert {d.reason for d in rejected} == {DeadLetterReason.MALFORMED_JSON, DeadLetterReason.UNKNOWN_SCHEMA_VERSION}
    assert {d.value for d in rejected} == {b"{broken", orjson.dumps({"schema_version": 7})}  # original bytes kept
    assert all(d.source_topic == events_topic and d.source_offset >= 0 for d in rejected)
    [overflow] = [d for d in letters if d.agent == "catalog"]
    assert overflow.reason is DeadLetterReason.PENDING_OVERFLOW and b"i404" in (overflow.value or b"")
    assert len(letters) == 3
