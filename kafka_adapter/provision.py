"""Creates the project's topics with their partitions and policies; nothing relies on auto-creation."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import NewTopic

from kafka_adapter.clients import admin
from reaseq.settings import Settings
from reaseq.topics import (
    CATALOG,
    GENERATION_SCOPED,
    TABLES,
    Role,
    TopicSpec,
    changelog_name,
    partitions_of,
    topic_config,
    topic_name,
)

log = logging.getLogger(__name__)

_CHANGELOG = TopicSpec("changelog", Role.CHANGELOG, "table key", "Faust table changelog.")


def desired_topics(settings: Settings, generation: int) -> list[NewTopic]:
    """Every topic the system needs for one state generation, with its broker configuration."""
    topics = [
        NewTopic(
            topic_name(settings, spec, generation),
            num_partitions=partitions_of(settings, spec),
            replication_factor=settings.replication_factor,
            config=topic_config(settings, spec),
        )
        for spec in CATALOG
    ]
    topics += [
        NewTopic(
            changelog_name(settings, table, generation),
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config=topic_config(settings, _CHANGELOG),
        )
        for table in TABLES
    ]
    return topics


def provision(settings: Settings, bootstrap: str, generation: int) -> list[str]:
    """Create missing topics (idempotent); returns the names created now.

    An existing topic with a different partition count is an error, not silently accepted:
    co-partitioning of streams and tables depends on it.
    """
    client = admin(bootstrap)
    existing = client.list_topics(timeout=10).topics
    wanted = desired_topics(settings, generation)
    for topic in wanted:
        have = existing.get(topic.topic)
        if have is not None and len(have.partitions) != topic.num_partitions:
            raise RuntimeError(
                f"topic {topic.topic} has {len(have.partitions)} partitions, expected {topic.num_partitions}"
            )
    missing = [t for t in wanted if t.topic not in existing]
    created: list[str] = []
    for name, future in client.create_topics(missing, request_timeout=15).items() if missing else []:
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created:
        log.info("topics created", extra={"topics": created})
    return created


def shared_topics(settings: Settings) -> list[str]:
    """The topics every state generation shares: sources, features, requests, dead letters, control."""
    return [topic_name(settings, spec) for spec in CATALOG if spec not in GENERATION_SCOPED]


def generation_topics(settings: Settings, generation: int) -> list[str]:
    """The topics that belong to one state generation only (repartition hops and changelogs)."""
    return [topic_name(settings, spec, generation) for spec in GENERATION_SCOPED] + [
        changelog_name(settings, table, generation) for table in TABLES
    ]


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
    """Delete those of ``topics`` that exist."""
    client = admin(bootstrap)
    existing = set(client.list_topics(timeout=10).topics)
    stale = [topic for topic in topics if topic in existing]
    for future in client.delete_topics(stale, operation_timeout=15).values() if stale else []:
        future.result()
